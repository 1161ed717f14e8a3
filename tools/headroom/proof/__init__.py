"""The proof (make test): takes the pins, the checkouts and dist/'s wheels; gives the pristine and patched environments
(build/envs/), each patch's tests red->green, upstream's suites and the guards on both, and build/report.json."""
