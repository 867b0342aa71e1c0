"""Cross-entropy evaluation against closed forms and the model's own (independent) loss."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mergelaw.errors import MergelawError  # noqa: E402
from mergelaw.measure import evaluate as ev  # noqa: E402

TEXT_A = "The quick brown fox jumps over the lazy dog. " * 3
TEXT_B = "def f(x):\n    return x * 2\n"


@pytest.fixture(scope="module")
def model(tiny):
    torch.manual_seed(0)
    return tiny.models(0)[0]


def _sets(tmp_path, max_length=16):
    (tmp_path / "a.txt").write_text(TEXT_A)
    (tmp_path / "b.jsonl").write_text('{"text": "hello world"}\n\n{"text": "xyz"}\n')
    tok = ev.byte_tokenizer()
    return [
        ev.build_eval_set("a", tmp_path / "a.txt", tok, max_length),
        ev.build_eval_set("b", tmp_path / "b.jsonl", tok, max_length),
    ]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 200), max_length=st.integers(2, 40))
def test_windows_predict_every_token_but_the_first_exactly_once(n, max_length):
    ids = np.arange(n)
    windows = ev.windows_of(ids, max_length)
    assert all(2 <= len(w) <= max_length for w in windows)
    predicted = [int(t) for w in windows for t in w[1:]]
    assert predicted == list(range(1, n))  # each once, in order: none truncated, none twice
    for w in windows:  # each predicted token keeps its true predecessor as context
        assert np.array_equal(np.diff(w), np.ones(len(w) - 1))


def test_uniform_logits_give_log_vocab(tmp_path, model, tiny):
    zeroed = tiny.models(0)[0]
    with torch.no_grad():
        zeroed.lm_head.weight.zero_()
    sets = _sets(tmp_path)
    loss, n = ev.evaluate(zeroed, ev.make_batches(sets, 64), len(sets))
    assert np.allclose(loss, math.log(tiny.vocab), rtol=1e-6)
    assert n.tolist() == [len(TEXT_A) - 1, len("hello world") - 1 + 2]


def test_matches_the_models_own_loss_and_ignores_padding(tmp_path, model):
    sets = _sets(tmp_path, max_length=40)
    # batch_tokens forces windows of different lengths into one padded batch
    batches = ev.make_batches(sets, 4 * 40)
    assert any((b.labels == ev.IGNORE).any() for b in batches)
    loss, n = ev.evaluate(model, batches, len(sets))
    for d, es in enumerate(sets):
        total, count = 0.0, 0
        for w in es.windows:  # each window alone, no padding: HF shifts and averages itself
            ids = torch.from_numpy(w)[None]
            with torch.no_grad():
                hf = model(input_ids=ids, labels=ids).loss.item()
            total += hf * (len(w) - 1)
            count += len(w) - 1
        assert n[d] == count
        assert loss[d] == pytest.approx(total / count, rel=1e-5)


def test_stacked_models_in_one_forward_match_one_at_a_time(tmp_path, tiny):
    base, experts = tiny.models(2, seed=3, scale=0.1)
    sets = _sets(tmp_path)
    batches = ev.make_batches(sets, 64)
    models = [base, *experts.values()]
    names = [n for n, _ in base.named_parameters()]
    sd = [dict(m.named_parameters()) for m in models]
    stacked = {n: torch.stack([s[n].detach() for s in sd]) for n in names}
    loss, n = ev.evaluate_stacked(base, stacked, batches, len(sets))
    for i, m in enumerate(models):
        one, n1 = ev.evaluate(m, batches, len(sets))
        assert np.allclose(loss[i], one, rtol=1e-5)
        assert np.array_equal(n, n1)
    assert not np.allclose(loss[0], loss[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_losses(tmp_path, tiny):
    """Same model, same batches: float32 on the GPU matches the CPU (measured on an H100: 1e-7)."""
    model = tiny.models(0)[0]
    sets = _sets(tmp_path)
    cpu, n_cpu = ev.evaluate(model, ev.make_batches(sets, 64), len(sets))
    gpu, n_gpu = ev.evaluate(model.to("cuda"), ev.make_batches(sets, 64, "cuda"), len(sets))
    assert np.array_equal(n_cpu, n_gpu)
    assert np.allclose(cpu, gpu, rtol=1e-5)


def test_bfloat16_on_cpu_is_close_to_float32(tmp_path, model):
    sets = _sets(tmp_path)
    batches = ev.make_batches(sets, 64)
    fp32, _ = ev.evaluate(model, batches, len(sets))
    bf16, _ = ev.evaluate(model, batches, len(sets), dtype="bfloat16")
    assert np.allclose(fp32, bf16, rtol=2e-2)


def test_tokenized_once_then_cached(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT_A)
    calls = []

    def encode(text):
        calls.append(text)
        return list(text.encode())

    tok = ev.Tokenizer(encode, "counting")
    first = ev.build_eval_set("a", tmp_path / "a.txt", tok, 16, cache_dir=tmp_path / "cache")
    second = ev.build_eval_set("a", tmp_path / "a.txt", tok, 16, cache_dir=tmp_path / "cache")
    assert len(calls) == 1
    assert first.hash == second.hash and first.n_tokens == second.n_tokens == len(TEXT_A) - 1
    other = ev.build_eval_set("a", tmp_path / "a.txt", tok, 8, cache_dir=tmp_path / "cache")
    assert other.hash != first.hash and other.n_tokens == first.n_tokens


@pytest.mark.parametrize(
    ("content", "name", "match"),
    [
        (None, "missing.txt", "no such eval file for domain 'x'"),
        ("   \n", "empty.txt", "eval text for domain 'x' is empty"),
        ("", "empty.jsonl", "eval text for domain 'x' is empty"),
        ('{"txt": 1}\n', "bad.jsonl", "line 1 is not a JSON object with a 'text' field"),
        ("a", "short.txt", "fewer than 2 tokens"),
    ],
)
def test_bad_eval_text_is_one_line_error(tmp_path, content, name, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(MergelawError, match=match) as err:
        ev.build_eval_set("x", path, ev.byte_tokenizer(), 16)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_token_outside_vocab_is_one_line_error(tmp_path):
    (tmp_path / "a.txt").write_text("é")  # UTF-8 bytes 0xC3 0xA9 = 195, 169
    with pytest.raises(MergelawError, match=r"token id 195 .* vocabulary of 100"):
        ev.build_eval_set("a", tmp_path / "a.txt", ev.byte_tokenizer(), 16, vocab_size=100)
