;; memory-bomb (hostile): grows memory one 64 KiB page at a time and writes to every
;; 4 KiB of each new page, so the memory is really used; when memory.grow fails
;; (the module's maximum, written in by the runtime) it traps.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (local $old i32) (local $at i32) (local $end i32)
    (loop $grow
      (local.set $old (memory.grow (i32.const 1)))
      (if (i32.eq (local.get $old) (i32.const -1)) (then unreachable))
      (local.set $at (i32.shl (local.get $old) (i32.const 16)))
      (local.set $end (i32.add (local.get $at) (i32.const 65536)))
      (loop $touch
        (i32.store (local.get $at) (local.get $old))
        (local.set $at (i32.add (local.get $at) (i32.const 4096)))
        (br_if $touch (i32.lt_u (local.get $at) (local.get $end))))
      (br $grow))))
