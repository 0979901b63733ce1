"""Train the sample models on data that Python and scikit-learn ship, and export them to ONNX.

Run from the project root:  .venv/bin/python -m sample_models.build [NAME ...]

Writes, for every sample in the catalog (or only the NAMEs given), `<name>.onnx` and a held-out validation set
`<name>.npz`, plus `breast_cancer_mlp_val.csv` and `digits_images.zip` (with their samples) for the data loaders'
tests and demos. Everything is seeded and single-threaded, so a rebuild on the same machine and versions
reproduces the same files; another CPU can round differently and change the weights slightly, so rebuild only
the samples you change. The text encoder's sentences come from this Python's own standard-library source.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import re
import sysconfig
import tempfile
import time
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
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

# text_encoder: which standard-library package a passage of its docstrings comes from
TEXT_SOURCES = {  # class (numbered in this order) -> its package or module in the standard library's directory
    "asyncio": "asyncio",
    "email": "email",
    "tkinter": "tkinter",
    "decimal": "_pydecimal.py",
    "unittest": "unittest",
    "logging": "logging",
}
TEXT_SEQ_LEN = 48  # every passage padded (or cut) to this many tokens
TEXT_VOCAB_WORDS = 2000  # the most frequent training words; the rest read as [UNK]
TEXT_VAL_ROWS = 400  # a default sweep calibrates static recipes on the first 128 and scores the other 272
PAIR_SHARE = 0.5  # chance that a sentence and the next one in its paragraph form a pair (B has token type 1)
PAD, UNK, CLS, SEP = 0, 1, 2, 3  # token ids; words start after them
WORD = re.compile(r"[a-z]+|\d+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


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


def docstrings(path: Path) -> list[str]:
    """The docstrings of every module, class and function in a source file or package, read with `ast`
    (nothing is imported or run), in file order."""
    found = []
    for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                if text := ast.get_docstring(node):
                    found.append(text)
    return found


def passages(doc: str, rng: np.random.Generator) -> list[tuple[tuple[str, ...], ...]]:
    """Lower-case word sequences of a docstring's sentences: one sentence per passage, or, with chance
    PAIR_SHARE when the next sentence of its paragraph fits beside it, the two as a BERT-style pair."""
    fits = TEXT_SEQ_LEN - 3  # room for words beside [CLS] and two [SEP]
    found = []
    for paragraph in re.split(r"\n\s*\n", doc):
        sentences = [tuple(WORD.findall(s.lower())) for s in SENTENCE_END.split(" ".join(paragraph.split()))]
        sentences = [s for s in sentences if 4 <= len(s) <= fits]  # leave out fragments and listings
        index = 0
        while index < len(sentences):
            first = sentences[index]
            pair = index + 1 < len(sentences) and len(first) + len(sentences[index + 1]) <= fits
            if pair and rng.random() < PAIR_SHARE:
                found.append((first, sentences[index + 1]))
                index += 2
            else:
                found.append((first,))
                index += 1
    return found


@dataclass(frozen=True)
class TextSplit:
    train: list[tuple[tuple[str, ...], ...]]
    train_y: np.ndarray
    val: list[tuple[tuple[str, ...], ...]]
    val_y: np.ndarray


def stdlib_text_split() -> TextSplit:
    """Passages labelled by their package, each passage once (one that two packages share is left out);
    TEXT_VAL_ROWS held out, stratified."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    rng = np.random.default_rng(SEED)
    labelled: dict[tuple, set[int]] = {}
    for label, source in enumerate(TEXT_SOURCES.values()):
        for doc in docstrings(stdlib / source):
            for passage in passages(doc, rng):
                labelled.setdefault(passage, set()).add(label)
    texts = [passage for passage, labels in labelled.items() if len(labels) == 1]
    labels = np.array([min(labelled[passage]) for passage in texts], dtype=np.int64)
    train_x, val_x, train_y, val_y = train_test_split(
        texts, labels, test_size=TEXT_VAL_ROWS, stratify=labels, random_state=SEED
    )
    return TextSplit(train_x, train_y, val_x, val_y)


def vocabulary(texts: list[tuple[tuple[str, ...], ...]]) -> dict[str, int]:
    """Word -> token id for the TEXT_VOCAB_WORDS most frequent words seen at least twice (ties alphabetical)."""
    counts = Counter(word for passage in texts for sentence in passage for word in sentence)
    frequent = sorted((word for word, count in counts.items() if count >= 2), key=lambda w: (-counts[w], w))
    return {word: token for token, word in enumerate(frequent[:TEXT_VOCAB_WORDS], start=SEP + 1)}


def encode(texts: list[tuple[tuple[str, ...], ...]], vocab: dict[str, int]) -> dict[str, np.ndarray]:
    """BERT's layout: [CLS] A [SEP] (B [SEP]), then PAD to TEXT_SEQ_LEN; the mask is 1 on real tokens and
    token types are 1 on segment B, both 0 on padding."""
    arrays = {name: np.zeros((len(texts), TEXT_SEQ_LEN), np.int64)
              for name in ("input_ids", "attention_mask", "token_type_ids")}
    for row, passage in enumerate(texts):
        tokens, types = [CLS], [0]
        for segment, sentence in enumerate(passage):
            tokens += [vocab.get(word, UNK) for word in sentence] + [SEP]
            types += [segment] * (len(sentence) + 1)
        arrays["input_ids"][row, : len(tokens)] = tokens
        arrays["attention_mask"][row, : len(tokens)] = 1
        arrays["token_type_ids"][row, : len(types)] = types
    return arrays


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

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor | None = None) -> torch.Tensor:
        query, key, value = (self.split_heads(project(x)) for project in (self.query, self.key, self.value))
        scores = query @ key.transpose(-2, -1) / self.head_dim**0.5
        if additive_mask is not None:  # 0 at real tokens, hugely negative at padding: softmax ignores padding
            scores = scores + additive_mask
        weights = torch.softmax(scores, dim=-1)
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


class TextEmbeddings(nn.Module):
    """BERT's embeddings: word (a Gather over the table), position and token type, summed and normalised."""

    def __init__(self, vocab_size: int, seq_len: int, d_model: int) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.position = nn.Embedding(seq_len, d_model)
        self.token_type = nn.Embedding(2, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.register_buffer("position_ids", torch.arange(seq_len)[None], persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        summed = self.word(input_ids) + self.position(self.position_ids) + self.token_type(token_type_ids)
        return self.norm(summed)


class PostNormEncoderBlock(nn.Module):
    """BERT's block: attention, then a GELU MLP, each added to its input and normalised after (post-norm)."""

    def __init__(self, d_model: int, n_heads: int, seq_len: int, mlp_dim: int) -> None:
        super().__init__()
        self.attention = SelfAttention(d_model, n_heads, seq_len)
        self.attention_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, d_model))
        self.mlp_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention(x, additive_mask))
        return self.mlp_norm(x + self.mlp(x))


class TextEncoder(nn.Module):
    """A two-layer BERT-style classifier, taking Hugging Face's three inputs and masking padding as
    Hugging Face exports do; it classifies from the [CLS] token through BERT's tanh pooler."""

    def __init__(self, vocab_size: int, n_classes: int, seq_len: int = TEXT_SEQ_LEN, d_model: int = 64,
                 n_heads: int = 4) -> None:
        super().__init__()
        self.embeddings = TextEmbeddings(vocab_size, seq_len, d_model)
        self.blocks = nn.ModuleList(PostNormEncoderBlock(d_model, n_heads, seq_len, 2 * d_model) for _ in range(2))
        self.pooler = nn.Linear(d_model, d_model)
        self.classifier = nn.Linear(d_model, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        # transformers' get_extended_attention_mask: 0 where the mask is 1, the float minimum where it is 0.
        additive_mask = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        x = self.embeddings(input_ids, token_type_ids)
        for block in self.blocks:
            x = block(x, additive_mask)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


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
    model: nn.Module, x: np.ndarray | dict[str, np.ndarray], y: np.ndarray, epochs: int, lr: float,
    batch_size: int = 64,
) -> nn.Module:
    """Mini-batch AdamW with a cosine schedule; the seeded generator fixes the batch order.
    `x` is the one input's rows, or each input's rows in the model's argument order."""
    arguments = [torch.from_numpy(rows) for rows in (x.values() if isinstance(x, dict) else [x])]
    targets = torch.from_numpy(y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = -(-len(targets) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(targets), generator=generator).split(batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(*(a[batch] for a in arguments)), targets[batch]).backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@dataclass(frozen=True)
class Built:
    name: str
    model: nn.Module
    val_inputs: dict[str, np.ndarray]  # input name -> rows, in the model's argument order
    val_labels: np.ndarray
    extra_arrays: dict[str, np.ndarray]
    calibration_inputs: dict[str, np.ndarray]  # training rows, for static int8 calibration


def build_digits_cnn(digits: Split) -> Built:
    torch.manual_seed(SEED)
    val_x, train_x = digits.val_x[:, None], digits.train_x[:, None]  # add the channel axis
    model = train(DigitsCNN(), train_x, digits.train_y, epochs=30, lr=3e-3)
    slices = {"slice": ink_slice(digits.val_x)}
    return Built("digits_cnn", model, {"image": val_x}, digits.val_y, slices, {"image": train_x})


def build_breast_cancer_mlp(data: Split) -> Built:
    torch.manual_seed(SEED)
    train_x, val_x = data.train_x.astype(np.float32), data.val_x.astype(np.float32)
    model = BreastCancerMLP(train_x.mean(axis=0), train_x.std(axis=0))
    model = train(model, train_x, data.train_y, epochs=100, lr=1e-3, batch_size=32)
    return Built("breast_cancer_mlp", model, {"features": val_x}, data.val_y, {}, {"features": train_x})


def build_tiny_transformer(digits: Split) -> Built:
    torch.manual_seed(SEED)
    model = train(TinyTransformer(), digits.train_x, digits.train_y, epochs=80, lr=2e-3)
    return Built("tiny_transformer", model, {"tokens": digits.val_x}, digits.val_y, {}, {"tokens": digits.train_x})


def build_wide_cnn(digits: Split) -> Built:
    torch.manual_seed(SEED)
    train_x = upsample(digits.train_x, WIDE_CNN_SIDE)[:, None]
    model = train(WideCNN(), train_x, digits.train_y, epochs=8, lr=2e-3)
    val_x = upsample(digits.val_x, WIDE_CNN_SIDE)[:, None]
    return Built("wide_cnn", model, {"image": val_x}, digits.val_y, {}, {"image": train_x})


def build_text_encoder(text: TextSplit) -> Built:
    torch.manual_seed(SEED)
    vocab = vocabulary(text.train)
    train_x, val_x = encode(text.train, vocab), encode(text.val, vocab)
    model = TextEncoder(vocab_size=SEP + 1 + len(vocab), n_classes=len(TEXT_SOURCES))
    model = train(model, train_x, text.train_y, epochs=30, lr=1e-3)
    return Built("text_encoder", model, val_x, text.val_y, {}, train_x)


# --- export and checks ------------------------------------------------------------------------


def export_onnx(built: Built, path: Path) -> None:
    """Legacy TorchScript export: it yields clean Conv/Gemm/MatMul graphs with readable,
    module-derived node names. Exporting to memory rules out external-data files."""
    buffer = io.BytesIO()
    examples = tuple(torch.from_numpy(rows[:2]) for rows in built.val_inputs.values())
    batch_axes = {name: {0: "batch"} for name in [*built.val_inputs, "logits"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose
        torch.onnx.export(
            built.model,
            examples,
            buffer,
            dynamo=False,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=list(built.val_inputs),
            output_names=["logits"],
            dynamic_axes=batch_axes,
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
        expected = built.model(*(torch.from_numpy(rows) for rows in built.val_inputs.values())).numpy()
    (actual,) = single_thread_session(path).run(None, built.val_inputs)
    np.testing.assert_allclose(actual, expected, atol=EXPORT_ATOL, err_msg=f"{built.name}: ort vs torch")


def save_validation_set(built: Built, path: Path) -> None:
    arrays = {**built.val_inputs, "labels": built.val_labels, **built.extra_arrays}
    np.savez_compressed(path, **arrays)
    with np.load(path, allow_pickle=False) as reloaded:  # fails if anything needs pickling
        assert set(reloaded.files) == set(arrays)


def onnx_accuracy(model_path: Path, data_path: Path) -> float:
    """Accuracy as the app sees it: the saved .onnx run by onnxruntime on the saved .npz."""
    session = single_thread_session(model_path)
    with np.load(data_path, allow_pickle=False) as data:
        (logits,) = session.run(None, {spec.name: data[spec.name] for spec in session.get_inputs()})
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
    def __init__(self, inputs: dict[str, np.ndarray], batch_size: int = 32) -> None:
        starts = range(0, len(next(iter(inputs.values()))), batch_size)
        self.batches = iter({name: rows[start : start + batch_size] for name, rows in inputs.items()}
                            for start in starts)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def median_latency(path: Path, feed: dict[str, np.ndarray], runs: int = 30) -> float:
    session = single_thread_session(path)
    for _ in range(5):  # warm-up: first runs allocate buffers
        session.run(None, feed)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings))


def int8_latency_ratios(built: Built, fp32_path: Path) -> dict[int, float]:
    """int8/fp32 latency (1 thread) of a QDQ static quantization, keyed by batch size."""
    with tempfile.TemporaryDirectory() as scratch:
        int8_path = Path(scratch) / "int8.onnx"
        quantize_static(
            str(fp32_path),
            str(int8_path),
            BatchReader({name: rows[:256] for name, rows in built.calibration_inputs.items()}),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        ratios = {}
        for batch_size in (32, 1):
            feed = {name: rows[:batch_size] for name, rows in built.val_inputs.items()}
            fp32 = median_latency(fp32_path, feed)
            int8 = median_latency(int8_path, feed)
            ratios[batch_size] = int8 / fp32
            print(f"  batch {batch_size:>2}: fp32 {fp32 * 1e3:.2f} ms, int8 {int8 * 1e3:.2f} ms, "
                  f"ratio {ratios[batch_size]:.2f}")
        return ratios


# --- main -------------------------------------------------------------------------------------


# Every catalog sample's builder, in catalog order, and the extra data files that come with some of them.
BUILDERS: dict[str, Callable[[], Built]] = {
    "digits_cnn": lambda: build_digits_cnn(digits_split()),
    "breast_cancer_mlp": lambda: build_breast_cancer_mlp(breast_cancer_split()),
    "tiny_transformer": lambda: build_tiny_transformer(digits_split()),
    "wide_cnn": lambda: build_wide_cnn(digits_split()),
    "text_encoder": lambda: build_text_encoder(stdlib_text_split()),
}
EXTRA_FILES: dict[str, Callable[[], None]] = {
    "digits_cnn": lambda: write_digits_zip(digits_split(), SAMPLES_DIR / "digits_images.zip"),
    "breast_cancer_mlp": lambda: write_breast_cancer_csv(
        breast_cancer_split(), SAMPLES_DIR / "breast_cancer_mlp_val.csv"
    ),
}
assert list(BUILDERS) == list(SAMPLES), "a builder for every catalog sample, in catalog order"


def build(names: list[str]) -> list[Built]:
    """Build, export, check and save the named samples (each seeds itself, so any subset builds the same files)."""
    built_models = []
    for name in names:
        start = time.perf_counter()
        built = BUILDERS[name]()
        sample = SAMPLES[name]
        export_onnx(built, sample.model_path)
        check_matches_torch(built, sample.model_path)
        save_validation_set(built, sample.data_path)
        if name in EXTRA_FILES:
            EXTRA_FILES[name]()
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
    parser = argparse.ArgumentParser(prog="python -m sample_models.build", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"samples to build (default all): {', '.join(SAMPLES)}")
    names = parser.parse_args().names or list(SAMPLES)
    if unknown := [name for name in names if name not in SAMPLES]:
        parser.error(f"no sample named {', '.join(unknown)}; the samples are {', '.join(SAMPLES)}")
    torch.set_num_threads(1)  # thread count changes float summation order; one thread reproduces exactly
    torch.use_deterministic_algorithms(True)
    built_models = build(names)
    print_summary(built_models)
    for built in built_models:
        if built.name == "wide_cnn":
            check_int8_speed(built)


def check_int8_speed(wide_cnn: Built) -> None:
    print("\nwide_cnn int8 (QDQ static, per-channel) vs fp32 latency, onnxruntime, 1 thread:")
    ratios = int8_latency_ratios(wide_cnn, SAMPLES["wide_cnn"].model_path)
    if ratios[32] >= INT8_TARGET_RATIO:
        print(f"WARNING: int8 is not clearly faster on this machine (batch-32 ratio >= {INT8_TARGET_RATIO})")


if __name__ == "__main__":
    main()
