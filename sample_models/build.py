"""Train the sample models on scikit-learn's shipped data and export them to ONNX.

Run from the project root:  .venv/bin/python -m sample_models.build

Writes, for every sample in the catalog, `<name>.onnx` and a held-out validation set `<name>.npz`,
plus `breast_cancer_mlp_val.csv` and `digits_images.zip` for the data loaders' tests and demos.
Everything is seeded and single-threaded, so a rebuild reproduces the same files.
"""

from __future__ import annotations

import csv
import io
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from sample_models.catalog import SAMPLES, SAMPLES_DIR

SEED = 0
OPSET = 17
EXPORT_ATOL = 1e-4
WIDE_CNN_SIDE = 32
INT8_TARGET_RATIO = 0.8  # int8/fp32 latency wide_cnn must beat to show that quantizing pays off


# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray


def split(x: np.ndarray, y: np.ndarray, val_fraction: float) -> Split:
    train_x, val_x, train_y, val_y = train_test_split(
        x, y, test_size=val_fraction, stratify=y, random_state=SEED
    )
    return Split(train_x, train_y.astype(np.int64), val_x, val_y.astype(np.int64))


def digits_split() -> Split:
    """8x8 digit images scaled to 0..1; 30% held out (540 rows)."""
    digits = load_digits()
    return split(digits.images.astype(np.float32) / 16.0, digits.target, val_fraction=0.3)


def breast_cancer_split() -> Split:
    """Raw (unscaled) features; half held out, so the validation set has ~300 rows (285)."""
    data = load_breast_cancer()
    return split(data.data, data.target, val_fraction=0.5)


def bilinear_matrix(source_size: int, target_size: int) -> np.ndarray:
    """Rows mix source pixels like torch's bilinear resize with align_corners=False."""
    centers = (np.arange(target_size) + 0.5) * source_size / target_size - 0.5
    centers = np.clip(centers, 0, source_size - 1)
    low = np.floor(centers).astype(int)
    high = np.minimum(low + 1, source_size - 1)
    weight_high = centers - low
    rows = np.arange(target_size)
    matrix = np.zeros((target_size, source_size))
    np.add.at(matrix, (rows, low), 1 - weight_high)
    np.add.at(matrix, (rows, high), weight_high)
    return matrix


def upsample(images: np.ndarray, side: int) -> np.ndarray:
    """Bilinear resize of a stack of square images [N, s, s] -> [N, side, side]."""
    matrix = bilinear_matrix(images.shape[-1], side)
    return np.einsum("ij,njk,lk->nil", matrix, images, matrix).astype(np.float32)


def ink_slice(images: np.ndarray) -> np.ndarray:
    """Name each image's subgroup by total ink, split at the median (unicode, so no pickling)."""
    ink = images.reshape(len(images), -1).sum(axis=1)
    return np.where(ink > np.median(ink), "ink:heavy", "ink:light")


# --- networks ---------------------------------------------------------------------------------


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


class BreastCancerMLP(nn.Module):
    """Standardises raw features itself, so callers feed the measurements as they are."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.layers = nn.Sequential(
            nn.Linear(30, 32), nn.ReLU(),
            nn.Linear(32, 16), nn.ReLU(),
            nn.Linear(16, 2),
        )  # fmt: skip

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers((features - self.mean) / self.std)


class SelfAttention(nn.Module):
    """Multi-head attention from plain Linear layers and matmuls, so the ONNX graph keeps
    MatMul nodes with constant weights that onnxruntime's quantizers can target."""

    def __init__(self, d_model: int, n_heads: int, seq_len: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.seq_len = n_heads, d_model // n_heads, seq_len
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.output = nn.Linear(d_model, d_model)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # Constant sizes (batch left as -1) keep the exported graph free of Shape/Gather ops.
        return x.reshape(-1, self.seq_len, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = (self.split_heads(project(x)) for project in (self.query, self.key, self.value))
        weights = torch.softmax(query @ key.transpose(-2, -1) / self.head_dim**0.5, dim=-1)
        merged = (weights @ value).transpose(1, 2).reshape(-1, self.seq_len, self.n_heads * self.head_dim)
        return self.output(merged)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: attention then a GELU MLP, each on a residual path."""

    def __init__(self, d_model: int, n_heads: int, seq_len: int, mlp_dim: int) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = SelfAttention(d_model, n_heads, seq_len)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class TinyTransformer(nn.Module):
    """Reads a digit as 8 tokens (its pixel rows) of 8 features each."""

    def __init__(self, seq_len: int = 8, token_dim: int = 8, d_model: int = 64, n_heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(token_dim, d_model)
        self.position = nn.Parameter(torch.randn(1, seq_len, d_model) * 0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(d_model, n_heads, seq_len, 2 * d_model) for _ in range(2)))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 10)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.embed(tokens) + self.position)
        return self.head(self.norm(x).mean(dim=1))


class WideCNN(nn.Module):
    """Wide 3x3 convs on 32x32 inputs: enough arithmetic that int8 kernels beat fp32."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(),
            nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, 10))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


# --- training ---------------------------------------------------------------------------------


def train(
    model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, batch_size: int = 64
) -> nn.Module:
    """Mini-batch AdamW with a cosine schedule; the seeded generator fixes the batch order."""
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = -(-len(inputs) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(inputs), generator=generator).split(batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs[batch]), targets[batch]).backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@dataclass(frozen=True)
class Built:
    name: str
    model: nn.Module
    input_name: str
    val_inputs: np.ndarray
    val_labels: np.ndarray
    extra_arrays: dict[str, np.ndarray]
    calibration_inputs: np.ndarray  # training rows, for static int8 calibration


def build_digits_cnn(digits: Split) -> Built:
    torch.manual_seed(SEED)
    val_x, train_x = digits.val_x[:, None], digits.train_x[:, None]  # add the channel axis
    model = train(DigitsCNN(), train_x, digits.train_y, epochs=30, lr=3e-3)
    slices = {"slice": ink_slice(digits.val_x)}
    return Built("digits_cnn", model, "image", val_x, digits.val_y, slices, train_x)


def build_breast_cancer_mlp(data: Split) -> Built:
    torch.manual_seed(SEED)
    train_x, val_x = data.train_x.astype(np.float32), data.val_x.astype(np.float32)
    model = BreastCancerMLP(train_x.mean(axis=0), train_x.std(axis=0))
    model = train(model, train_x, data.train_y, epochs=100, lr=1e-3, batch_size=32)
    return Built("breast_cancer_mlp", model, "features", val_x, data.val_y, {}, train_x)


def build_tiny_transformer(digits: Split) -> Built:
    torch.manual_seed(SEED)
    model = train(TinyTransformer(), digits.train_x, digits.train_y, epochs=80, lr=2e-3)
    return Built("tiny_transformer", model, "tokens", digits.val_x, digits.val_y, {}, digits.train_x)


def build_wide_cnn(digits: Split) -> Built:
    torch.manual_seed(SEED)
    train_x = upsample(digits.train_x, WIDE_CNN_SIDE)[:, None]
    model = train(WideCNN(), train_x, digits.train_y, epochs=8, lr=2e-3)
    val_x = upsample(digits.val_x, WIDE_CNN_SIDE)[:, None]
    return Built("wide_cnn", model, "image", val_x, digits.val_y, {}, train_x)


# --- export and checks ------------------------------------------------------------------------


def export_onnx(built: Built, path: Path) -> None:
    """Legacy TorchScript export: it yields clean Conv/Gemm/MatMul graphs with readable,
    module-derived node names. Exporting to memory rules out external-data files."""
    buffer = io.BytesIO()
    example = torch.from_numpy(built.val_inputs[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose
        torch.onnx.export(
            built.model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=[built.input_name],
            output_names=["logits"],
            dynamic_axes={built.input_name: {0: "batch"}, "logits": {0: "batch"}},
        )
    model = onnx.load_model_from_string(buffer.getvalue())
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, path)


def single_thread_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_matches_torch(built: Built, path: Path) -> None:
    with torch.no_grad():
        expected = built.model(torch.from_numpy(built.val_inputs)).numpy()
    (actual,) = single_thread_session(path).run(None, {built.input_name: built.val_inputs})
    np.testing.assert_allclose(actual, expected, atol=EXPORT_ATOL, err_msg=f"{built.name}: ort vs torch")


def save_validation_set(built: Built, path: Path) -> None:
    arrays = {built.input_name: built.val_inputs, "labels": built.val_labels, **built.extra_arrays}
    np.savez_compressed(path, **arrays)
    with np.load(path, allow_pickle=False) as reloaded:  # fails if anything needs pickling
        assert set(reloaded.files) == set(arrays)


def onnx_accuracy(model_path: Path, data_path: Path) -> float:
    """Accuracy as the app sees it: the saved .onnx run by onnxruntime on the saved .npz."""
    session = single_thread_session(model_path)
    input_name = session.get_inputs()[0].name
    with np.load(data_path, allow_pickle=False) as data:
        (logits,) = session.run(None, {input_name: data[input_name]})
        return float((logits.argmax(axis=1) == data["labels"]).mean())


# --- extra data files for the loaders ---------------------------------------------------------


def write_breast_cancer_csv(data: Split, path: Path) -> None:
    """Same rows as the npz, with the original (float64) values and sklearn's column names."""
    feature_names = [str(name) for name in load_breast_cancer().feature_names]
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*feature_names, "label"])
        for row, label in zip(data.val_x.tolist(), data.val_y.tolist()):
            writer.writerow([*row, label])


def write_digits_zip(digits: Split, path: Path) -> None:
    """Image-folder layout `<class>/<row>.png`; fixed timestamps keep the zip reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for row, (image, label) in enumerate(zip(digits.val_x, digits.val_y)):
            png = io.BytesIO()
            pixels = np.round(image * 255).astype(np.uint8)  # a 2-D uint8 array becomes a grayscale (L) PNG
            Image.fromarray(pixels).save(png, format="PNG")
            entry = zipfile.ZipInfo(f"{label}/{row:03d}.png", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(entry, png.getvalue(), compress_type=zipfile.ZIP_DEFLATED)


# --- int8 latency check -----------------------------------------------------------------------


class BatchReader(CalibrationDataReader):
    def __init__(self, input_name: str, inputs: np.ndarray, batch_size: int = 32) -> None:
        starts = range(0, len(inputs), batch_size)
        self.batches = iter({input_name: inputs[start : start + batch_size]} for start in starts)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def median_latency(path: Path, input_name: str, batch: np.ndarray, runs: int = 30) -> float:
    session = single_thread_session(path)
    for _ in range(5):  # warm-up: first runs allocate buffers
        session.run(None, {input_name: batch})
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {input_name: batch})
        timings.append(time.perf_counter() - start)
    return float(np.median(timings))


def int8_latency_ratios(built: Built, fp32_path: Path) -> dict[int, float]:
    """int8/fp32 latency (1 thread) of a QDQ static quantization, keyed by batch size."""
    with tempfile.TemporaryDirectory() as scratch:
        int8_path = Path(scratch) / "int8.onnx"
        quantize_static(
            str(fp32_path),
            str(int8_path),
            BatchReader(built.input_name, built.calibration_inputs[:256]),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        ratios = {}
        for batch_size in (32, 1):
            batch = built.val_inputs[:batch_size]
            fp32 = median_latency(fp32_path, built.input_name, batch)
            int8 = median_latency(int8_path, built.input_name, batch)
            ratios[batch_size] = int8 / fp32
            print(f"  batch {batch_size:>2}: fp32 {fp32 * 1e3:.2f} ms, int8 {int8 * 1e3:.2f} ms, "
                  f"ratio {ratios[batch_size]:.2f}")
        return ratios


# --- main -------------------------------------------------------------------------------------


def build_all() -> list[Built]:
    digits, breast_cancer = digits_split(), breast_cancer_split()
    builders = {
        "digits_cnn": lambda: build_digits_cnn(digits),
        "breast_cancer_mlp": lambda: build_breast_cancer_mlp(breast_cancer),
        "tiny_transformer": lambda: build_tiny_transformer(digits),
        "wide_cnn": lambda: build_wide_cnn(digits),
    }
    assert list(builders) == list(SAMPLES), "build every catalog sample, in catalog order"
    write_breast_cancer_csv(breast_cancer, SAMPLES_DIR / "breast_cancer_mlp_val.csv")
    write_digits_zip(digits, SAMPLES_DIR / "digits_images.zip")
    built_models = []
    for name, build in builders.items():
        start = time.perf_counter()
        built = build()
        sample = SAMPLES[name]
        export_onnx(built, sample.model_path)
        check_matches_torch(built, sample.model_path)
        save_validation_set(built, sample.data_path)
        print(f"built {name} in {time.perf_counter() - start:.1f}s")
        built_models.append(built)
    return built_models


def print_summary(built_models: list[Built]) -> None:
    print(f"\n{'model':<20}{'params':>10}{'onnx bytes':>12}{'fp32 acc':>10}")
    for built in built_models:
        sample = SAMPLES[built.name]
        params = sum(p.numel() for p in built.model.parameters())
        accuracy = onnx_accuracy(sample.model_path, sample.data_path)
        print(f"{built.name:<20}{params:>10,}{sample.model_path.stat().st_size:>12,}{accuracy:>10.4f}")
    total = sum(f.stat().st_size for f in SAMPLES_DIR.iterdir() if f.is_file())
    print(f"sample_models/ total: {total / 1e6:.2f} MB")


def main() -> None:
    torch.set_num_threads(1)  # thread count changes float summation order; one thread reproduces exactly
    torch.use_deterministic_algorithms(True)
    built_models = build_all()
    print_summary(built_models)
    print("\nwide_cnn int8 (QDQ static, per-channel) vs fp32 latency, onnxruntime, 1 thread:")
    wide_cnn = next(built for built in built_models if built.name == "wide_cnn")
    ratios = int8_latency_ratios(wide_cnn, SAMPLES["wide_cnn"].model_path)
    if ratios[32] >= INT8_TARGET_RATIO:
        print(f"WARNING: int8 is not clearly faster on this machine (batch-32 ratio >= {INT8_TARGET_RATIO})")


if __name__ == "__main__":
    main()
