"""Library versions recorded with every artifact."""

import importlib.metadata
import platform

PACKAGES = ("routeclf", "torch", "transformers", "peft", "accelerate", "datasets", "scikit-learn", "safetensors")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
