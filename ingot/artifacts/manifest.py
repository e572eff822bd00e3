"""The artifact's manifest.json: everything a runtime needs to know to serve, and to trust, an artifact."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from ingot.artifacts.weight_format import WeightFormat
from ingot.errors import ArtifactError

SCHEMA_VERSION = 2  # 2: a cpu artifact names the CPU it needs (``cpu``)
MANIFEST_NAME = "manifest.json"


def _inside_the_artifact(path: str) -> str:
    """A path the manifest names must stay inside the artifact directory: the loader joins it onto that directory,
    so an absolute path or a ``..`` would load (and run) files the artifact's digests never covered."""
    parts = PurePosixPath(path).parts
    if not path or "\0" in path or "\\" in path or path.startswith("/") or ".." in parts:
        raise ValueError(f"{path!r} is not a relative path inside the artifact")
    return path


ArtifactPath = Annotated[str, AfterValidator(_inside_the_artifact)]  # "programs/decode.pt2", never "../x" or "/x"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CpuRequirement(_Strict):
    """The CPU a cpu artifact's native code (its programs, ingot's library) was compiled for: a machine lacking one
    of ``flags`` is refused before any of it is loaded (see ingot.artifacts.cpu_isa)."""

    isa: str  # the vector ISA: avx2, avx512
    march: str  # the x86-64 level every native file was compiled for: x86-64-v3, x86-64-v4
    flags: list[str]  # the /proc/cpuinfo flags that code may use


class TensorSpec(_Strict):
    """A program input or output. Symbolic sizes are named (``"batch"``, ``"blocks"``)."""

    name: str
    dtype: str
    shape: list[int | str]


class OutputAgreement(_Strict):
    """One output of a program run two ways on the same inputs."""

    pcc: float
    max_abs_error: float


class ConversionCheck(_Strict):
    """A TT program's JAX function (what was lowered to TT-NN), run on JAX's CPU backend, against the torch program
    it was converted from, on the same inputs: the artifact's weights and, for a language-model step, a filled
    KV cache with scattered block tables and padding (see ingot.compile.verify.tt_conversion)."""

    outputs: dict[str, OutputAgreement]  # output name -> agreement; the KV cache: the slots outside the padding block
    pcc: float  # the lowest over the outputs
    max_abs_error: float  # the largest over the outputs
    min_pcc: float
    passed: bool


class TtProgramInfo(_Strict):
    """A program lowered for a Tenstorrent target: how, with what, and what it is made of."""

    status: Literal["lowered", "cpu-fallback"]  # cpu-fallback: ops did not lower (file is "", no .ttnn)
    # TTNN op -> count, from the TTNN MLIR the flatbuffer was translated from; an activation fused into another op's
    # attributes counts as "ttnn.<activation> (fused)" (see ingot.compile.tt.ops)
    ttnn_ops: dict[str, int]
    unlowered_ops: list[str] = []
    error: str | None = None
    dumps: list[ArtifactPath] = []  # TTIR / TTNN MLIR files beside the .ttnn
    weight_inputs: list[str] = []  # the program's leading inputs, in order: these weights and buffers
    inputs: list[TensorSpec] = []  # then these (integers are int32 on TT)
    outputs: list[TensorSpec] = []
    toolchain: dict[str, str]  # plugin and frontend versions, system descriptor sha256
    optimization_level: int
    seconds: float
    torch_program: ArtifactPath | None = None  # the torch.export program it was converted from, without weights
    jax_program: ArtifactPath | None = None  # its JAX function exported for JAX's CPU backend (jax.export)
    conversion: ConversionCheck | None = None  # None: not checked (a cpu-fallback program, an older artifact)


class ProgramSpec(_Strict):
    """One compiled program and the shape range it accepts; the runtime checks calls against it."""

    name: str
    kind: Literal["prefill", "decode", "logits", "detect"]  # logits: hidden states [rows, hidden] to logits
    file: ArtifactPath | Literal[""]  # "": a TT program that fell back to the CPU (no .ttnn)
    batch: tuple[int, int]
    tokens: tuple[int, int] | None = None  # None: the program takes images, not tokens
    frozen: bool = False  # the weights are folded into the program, which loads none from the weights file
    kernels: list[ArtifactPath] = []  # ingot's native library (the op that runs programs, its kernels), loaded first
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    tt: TtProgramInfo | None = None

    def accepts(self, batch: int, tokens: int | None = None) -> bool:
        in_tokens = self.tokens is None or tokens is not None and self.tokens[0] <= tokens <= self.tokens[1]
        return self.batch[0] <= batch <= self.batch[1] and in_tokens


class ModelInfo(_Strict):
    name: str
    family: str
    architecture: str
    source_kind: Literal["hf", "gguf", "darknet", "pytorch", "random"]
    config: dict
    source_sha256: dict[str, str]


class KVCacheLayout(_Strict):
    """kv_cache[layers, 2, num_blocks, block_size, kv_heads, head_dim]; block 0 is the padding block."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    block_size: int
    dtype: str


class Buckets(_Strict):
    """The fixed shapes the runtime pads every step to, on every target."""

    prefill_tokens: list[int]
    decode_batch: list[int]
    max_context: int


class TokenizerInfo(_Strict):
    directory: ArtifactPath
    eos_token_ids: list[int]
    bos_token_id: int | None
    pad_token_id: int | None
    has_chat_template: bool


class PackedLinear(_Strict):
    """Linears of the model stored as one tensor of 48-column panels, the layout ingot's matrix product reads
    (cpu): what they were, so that a reference model can be rebuilt from the artifact alone."""

    weights: list[str]  # the model's weight names, in the order of their output rows
    out_features: list[int]
    biases: list[str | None]  # their bias names (None: no bias); stored concatenated under the packed name + "_bias"
    format: WeightFormat = WeightFormat.FP32  # what the packed tensor's records hold (biases stay float32)


class WeightsInfo(_Strict):
    file: ArtifactPath
    aliases: dict[str, str]  # a program's constant name -> the tensor stored under another name (tied weights)
    packed: dict[str, PackedLinear] = {}  # a stored tensor's name -> the linears packed into it
    # float32 tensors whose values are rounded to a format by --weight-format (norm weights, an untied embedding,
    # biases): name -> that format (see ingot/compile/weight_formats.py)
    rounded: dict[str, WeightFormat] = {}


class Preprocess(_Strict):
    """How an image becomes the network input: letterboxed (aspect kept, padded with ``pad_value`` gray), RGB,
    divided by 255."""

    letterbox: bool = True
    pad_value: int = 128
    color: Literal["RGB"] = "RGB"
    scale: float = 1 / 255


class Postprocess(_Strict):
    """Defaults a request may override, and how many candidates NMS looks at."""

    confidence_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    max_candidates: int = 3000


class DetectorInfo(_Strict):
    """What the runtime needs to turn a detector's head maps into boxes; the program outputs one map per stride."""

    input_size: int
    batch_sizes: list[int]  # the buckets a batch is padded to
    class_names: list[str]
    anchors: list[tuple[int, int]]  # (width, height) in input pixels
    anchor_masks: list[list[int]]  # head i uses anchors[anchor_masks[i]]
    strides: list[int]
    scale_x_y: list[float]
    preprocess: Preprocess
    postprocess: Postprocess


class FileEntry(_Strict):
    sha256: str
    size: int


class TenstorrentAcceptance(_Strict):
    """Tenstorrent's acceptance numbers for a language model's logits against its float32 reference: PCC, and the
    teacher-forced top-1/top-5 tt-metal reports for ``reported_model`` in a mode (None: no mode to compare with)."""

    min_pcc: float
    reported_model: str
    reported_top1: float | None
    reported_top5: float | None


class VerificationReport(_Strict):
    reference: str
    num_tokens: int
    prefill_tokens: int
    decode_steps: int
    pcc: float
    max_abs_error: float
    top1_agreement: float
    top5_agreement: float
    min_pcc: float
    min_top1: float
    programs: dict[str, float]  # program name -> PCC of its logits against the reference
    passed: bool  # every bar above was met
    weight_format: str = "fp32"  # the artifact's --weight-format
    # a weight format other than fp32: Tenstorrent's numbers, beside which the report is shown
    tenstorrent: TenstorrentAcceptance | None = None
    allowed_below_bar: bool = False  # not passed, and published anyway (--allow-low-accuracy)

    @property
    def accepted(self) -> bool:
        """Passed, or let through by --allow-low-accuracy: the artifact may be published and served."""
        return self.passed or self.allowed_below_bar


class TtDetectionAcceptance(_Strict):
    """Tenstorrent's own bars for YOLOv4 against its float32 reference (tt-metal's models/demos/yolov4)."""

    min_box_pcc: float
    min_confidence_pcc: float
    min_box_pcc_blackhole: float  # what tt-metal asks of boxes on Blackhole, where it checks no confidences


class TtDetectionPrediction(_Strict):
    """A detector's predicted accuracy under a TT format policy: the float32 network with the policy's formats
    emulated, against the same network unchanged, on the verification's sample images."""

    policy: str
    description: str
    source: str
    reference: str
    images: int
    input_size: int
    box_pcc: float
    confidence_pcc: float
    head_pcc: float  # the raw head maps
    max_abs_error: float  # over the raw head maps
    tenstorrent: TtDetectionAcceptance
    meets_tt_pcc: bool  # boxes and confidences reach Tenstorrent's (non-Blackhole) bars
    applied: dict[str, int]  # "<tensor kind> <format>" -> how many tensors were stored in it


class Restamp(_Strict):
    """A file taken from another repository with one field rewritten: where from, under which license, what changed."""

    repository: str
    commit: str
    path: str
    license: str
    original_sha256: str
    field: str
    original: str
    replacement: str


class SystemDescriptorInfo(_Strict):
    """The system descriptor a Tenstorrent artifact was compiled against (compile-only mode), and where it is from."""

    file: str  # its name in ingot/compile/tt/descriptors
    sha256: str
    origin: str
    restamped: Restamp | None = None  # a descriptor of another repository's, with one field rewritten


class TtTargetInfo(_Strict):
    """What a Tenstorrent artifact was compiled for, why it is not verified on this host, and (a detector) its
    accuracy predicted on the CPU in the device's number formats."""

    spec: dict  # the device spec (ingot.compile.tt.specs.DeviceSpec)
    device_verification: str
    descriptor: SystemDescriptorInfo | None = None  # None: an artifact built before ingot recorded it
    predicted: list[TtDetectionPrediction] = []


class DetectionVerificationReport(_Strict):
    """The compiled detector against the eager float32 network on the same letterboxed sample images."""

    kind: Literal["detection"] = "detection"
    reference: str
    images: int
    input_size: int
    box_pcc: float
    confidence_pcc: float
    max_abs_error: float  # over the raw head maps
    min_box_pcc: float
    min_confidence_pcc: float
    programs: dict[str, float]  # program call (name and batch) -> PCC of its head maps against the reference
    onnx_pcc: float | None = None  # the exported ONNX in onnxruntime against the reference, when emitted
    min_onnx_pcc: float | None = None
    passed: bool

    @property
    def accepted(self) -> bool:
        return self.passed


class Manifest(_Strict):
    """An artifact of a language model (``kind`` llm: KV-cache layout, buckets, tokenizer) or of a detector
    (``kind`` detector: the ``detector`` section)."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["llm", "detector"] = "llm"
    key: str
    target: str
    created_at: str
    model: ModelInfo
    options: dict
    toolchain: dict[str, str]
    kv_cache: KVCacheLayout | None = None
    buckets: Buckets | None = None
    programs: list[ProgramSpec]
    weights: WeightsInfo
    tokenizer: TokenizerInfo | None = None
    detector: DetectorInfo | None = None
    verification: VerificationReport | DetectionVerificationReport | None = None
    tt: TtTargetInfo | None = None
    cpu: CpuRequirement | None = None  # the cpu target's; None on a Tenstorrent target
    files: dict[ArtifactPath, FileEntry] = {}  # every file of the artifact but the manifest

    @model_validator(mode="after")
    def _sections_of_its_kind(self) -> Manifest:
        needed = ("kv_cache", "buckets", "tokenizer") if self.kind == "llm" else ("detector",)
        needed += ("cpu",) if self.target == "cpu" else ()
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} manifest needs {', '.join(missing)}")
        return self

    def program(self, name: str) -> ProgramSpec:
        return next(p for p in self.programs if p.name == name)

    def write(self, directory: Path) -> None:
        (directory / MANIFEST_NAME).write_text(self.model_dump_json(indent=2) + "\n")

    def named_paths(self) -> list[str]:
        """Every file the runtime opens by the manifest's word: checked to be among the artifact's hashed files."""
        paths = [self.weights.file]
        for program in self.programs:
            paths += [program.file, *program.kernels] if program.file else program.kernels
        return paths

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        return cls.parse(directory.name, read_manifest_bytes(directory))

    @classmethod
    def parse(cls, name: str, raw: bytes) -> Manifest:
        """The manifest in ``raw`` (the bytes of artifact ``name``'s manifest.json), or a one-line ArtifactError."""
        try:
            data = json.loads(raw)
        except ValueError as error:
            raise ArtifactError(f"{name}: unreadable {MANIFEST_NAME}: {error}") from error
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise ArtifactError(
                f"{name}: manifest schema {version}, this ingot reads schema {SCHEMA_VERSION}: recompile"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ArtifactError(f"{name}: invalid {MANIFEST_NAME}: {where}: {first['msg']}") from error


def read_manifest_bytes(directory: Path) -> bytes:
    """The bytes of the artifact's manifest.json (read once, so the bytes hashed are the bytes parsed)."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{directory.name}: not an artifact (no {MANIFEST_NAME})")
    try:
        return path.read_bytes()
    except OSError as error:
        raise ArtifactError(f"{directory.name}: unreadable {MANIFEST_NAME}: {error}") from error


def manifest_sha256(raw: bytes) -> str:
    """The manifest's digest: it names every other file's sha256, so it stands for the whole artifact."""
    return hashlib.sha256(raw).hexdigest()
