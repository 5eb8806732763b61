;; output-flood (hostile): writes 4 KiB lines to stdout forever, ignoring errors.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0: iovec (buf 64, len 4096)   8: count written   64..4160: the line
  (data (i32.const 0) "\40\00\00\00\00\10\00\00")
  (func (export "_start")
    (local $at i32)
    (local.set $at (i32.const 64))
    (loop $fill
      (i32.store8 (local.get $at) (i32.const 0x78)) ;; 'x'
      (local.set $at (i32.add (local.get $at) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $at) (i32.const 4159))))
    (i32.store8 (i32.const 4159) (i32.const 0x0a))
    (loop $flood
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $flood))))
