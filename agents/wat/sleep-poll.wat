;; sleep-poll (hostile): asks poll_oneoff for a 10 s relative monotonic-clock sleep,
;; then writes {"ok":true}. The shim busy-waits in poll_oneoff, so only the
;; wall-clock deadline (terminating the worker) stops it early.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0..48: the subscription: userdata u64 @0 = 7, tag u8 @8 = 0 (clock),
  ;;        clock id u32 @16 = 1 (monotonic), timeout u64 @24 = 10e9 ns,
  ;;        precision u64 @32 = 0, flags u16 @40 = 0 (relative)
  ;; 64..96: the event   96: event count   128: iovec   160: the answer
  (data (i32.const 0) "\07")
  (data (i32.const 16) "\01\00\00\00")
  (data (i32.const 24) "\00\e4\0b\54\02\00\00\00")
  (data (i32.const 128) "\a0\00\00\00\0c\00\00\00")
  (data (i32.const 160) "{\"ok\":true}\n")
  (func (export "_start")
    (drop (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 96)))
    (drop (call $fd_write (i32.const 1) (i32.const 128) (i32.const 1) (i32.const 136)))))
