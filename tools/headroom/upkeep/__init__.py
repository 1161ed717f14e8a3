"""Living with upstream (make rebase, canary, pr): takes a new release or one patch of the series; gives the series
on that release (rebase/), the new releases' verdicts (canary/: build/canary/), a PR's material (pr/: build/pr/)."""
