"""The series (make fetch, apply, export): takes vendor/pins.toml and patches/<name>/; gives the hash-checked sdists,
the vendor/<name>/ checkouts (pristine tag, a commit per patch, the version commit), their byte-stable export."""
