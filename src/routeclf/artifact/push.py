"""`routeclf push`: upload an artifact to the Hugging Face hub, only after it passes the gate."""

from __future__ import annotations

from pathlib import Path

from routeclf.artifact.validate import Report
from routeclf.errors import RouteclfError


def artifact_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def push_artifact(directory: Path, repo_id: str, report: Report, private: bool, dry_run: bool,
                  token: str | None = None) -> list[Path]:
    """Upload every file of `directory` to the model repository `repo_id`; returns the files."""
    if report.exit_code != 0:
        raise RouteclfError(f"refusing to push {directory}: validation did not pass (see the checks above)")
    if "/" not in repo_id:
        raise RouteclfError(f"--repo-id must look like ORG/NAME, got {repo_id!r}")
    files = artifact_files(directory)
    if dry_run:
        return files
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="model",
                          commit_message="Upload routeclf artifact (validated)")
    except Exception as exc:  # network, authentication and permission errors all stop the push here
        raise RouteclfError(f"upload to {repo_id} failed: {type(exc).__name__}: {exc}") from exc
    return files
