"""Error classes. Each has its own exit code; the message leads with what to do next.

One top-level handler (``headroom.__main__.main``) turns them into exit codes.
"""

from __future__ import annotations


INTERRUPTED = 130  # Ctrl-C (SIGINT): not an error class; ``cli.main`` returns it with one line on the state left


class HeadroomError(Exception):
    """Base class. ``exit_code`` is what the process exits with."""

    exit_code = 1

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message if not self.details else f"{self.message}\n{self.details}"


class UsageError(HeadroomError):
    """The command line is wrong: an unknown option or value, a missing argument, an option the subcommand cannot
    honour. Checked before any work."""

    exit_code = 2


class PinsError(HeadroomError):
    """vendor/pins.toml is missing, malformed or incomplete (the message names the key and the likely intended one)."""

    exit_code = 3


class HashMismatch(HeadroomError):
    """A downloaded or cached file does not have the pinned sha256 (both are printed; nothing is extracted)."""

    exit_code = 4


class UnsafeArchive(HeadroomError):
    """An sdist member would land outside the extraction directory (absolute path, ``..``, a link leaving the tree)."""

    exit_code = 5


class SeriesError(HeadroomError):
    """patches/<name>/series names a missing file, or a patch file is not in the series."""

    exit_code = 6


class PatchConflict(HeadroomError):
    """A patch of the series does not apply (upstream moved); the checkout is left mid-``git am``."""

    exit_code = 7


class UnsavedWork(HeadroomError):
    """The checkout holds commits or edits that are not in patches/."""

    exit_code = 8


class ExportDrift(HeadroomError):
    """Re-exporting the checkout would change patches/ (``export --check``)."""

    exit_code = 9


class BuildError(HeadroomError):
    """A wheel could not be built (e.g. the package has no version line to stamp)."""

    exit_code = 10


class IndexConflict(HeadroomError):
    """A file of the same name but other bytes already exists in dist/: it is never overwritten."""

    exit_code = 11


class CommandFailed(HeadroomError):
    """A subprocess (git, pip, python -m build, pytest) failed; its output is replayed."""

    exit_code = 12


class ProofFailed(HeadroomError):
    """A patch's own tests are not red on pristine and green on patched, or the upstream suites failed."""

    exit_code = 13


class NotApplied(HeadroomError):
    """A step needs ``make apply`` or ``make build`` first (also: its state file is malformed)."""

    exit_code = 14


class DataError(HeadroomError):
    """One of the tool's own data files (``upstream_data/*.toml``, ``known_failures.txt``, ``pr_data/<name>.toml``) is
    malformed; the file and line or key are named."""

    exit_code = 15


class RetiredPatch(HeadroomError):
    """``pr``: the patch is retired (patches/<name>/retired.toml: upstream made it unnecessary); nothing to draft."""

    exit_code = 21


class DocsStale(HeadroomError):
    """``docs --check``: docs/reference/commands.md or exit-codes.md differs from what the parser and these classes say
    (``make docs-ref`` rewrites them)."""

    exit_code = 16


class IdentityMissing(HeadroomError):
    """``make pr`` needs the person's git identity (git config user.name / user.email) for the PR commit."""

    exit_code = 20


class PublishConflict(HeadroomError):
    """The index already holds a file of the same name with other bytes (``publish``); nothing is overwritten."""

    exit_code = 25


class PublishAuthError(HeadroomError):
    """The index refused the credentials (401/403), or it needs some and none were found (``publish``)."""

    exit_code = 26


class IndexUnreachable(HeadroomError):
    """The index could not be reached or did not answer like a simple index (``publish``)."""

    exit_code = 27


class UploadFailed(HeadroomError):
    """The index rejected an upload; what was uploaded before stays, the next publish completes the rest."""

    exit_code = 28


class Locked(HeadroomError):
    """Another run holds a lock this command needs, and ``--no-wait`` (NO_WAIT=1) was given; the message names its pid
    and command."""

    exit_code = 40


class CorruptPatch(HeadroomError):
    """A file in patches/ is not a valid patch (git: corrupt patch at line N)."""

    exit_code = 41


class DiskFull(HeadroomError):
    """A write failed with ENOSPC (disk full): the step, the space it needs and the space free are printed; the previous
    state is left as it was."""

    exit_code = 42


class CorruptArchive(HeadroomError):
    """A pinned sdist matches its sha256 but is not a readable gzip tar archive."""

    exit_code = 43


class SbomMissing(HeadroomError):
    """A wheel or installed distribution carries no readable headroom SBOM (or an invalid one)."""

    exit_code = 30


class VerifyMismatch(HeadroomError):
    """``verify``: the rebuild from the pins and series the SBOM names gives other bytes."""

    exit_code = 31


class ProvenanceMismatch(HeadroomError):
    """``verify``: this checkout's pins or patches are not the ones the SBOM names."""

    exit_code = 32


class ReleaseNotFound(HeadroomError):
    """``bench --transformers``: the package index has no official wheel (with a sha256) of that release."""

    exit_code = 50


class RequirementsConflict(HeadroomError):
    """requirements/test-env.txt names an upstream that vendor/pins.toml pins (the environments take it from the pin)."""

    exit_code = 35


class DependencyUnresolved(HeadroomError):
    """A test environment's dependencies do not resolve (pip finds no match, or ``pip check`` fails afterwards)."""

    exit_code = 36


class LandedCheckNotRun(HeadroomError):
    """``rebase``: the landed check's environment could not be made, so the check could not run; the rebase is undone."""

    exit_code = 37


class CanaryAttention(HeadroomError):
    """``canary``: a new upstream release needs a person (a patch landed, conflicts or is unknown, a release is not
    installable, an upstream regression); the report names each one."""

    exit_code = 60
