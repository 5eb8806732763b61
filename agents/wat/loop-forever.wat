;; loop-forever (hostile): an endless loop that calls nothing. Only fuel or the
;; wall-clock deadline can stop it.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $spin (br $spin))))
