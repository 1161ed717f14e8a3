"""The ground under every stage: takes nothing from them; gives one subprocess helper (proc), git behind one module
(vcs), locks (lock), atomic writes and state files (fsutil), output by step (ui), errors with exit codes (errors)."""
