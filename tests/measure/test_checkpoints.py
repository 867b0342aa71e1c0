"""Sharded Hugging Face checkpoints: tensors by the index's weight map, a consolidated copy beside
the shards ignored, one-line errors naming the shard and tensor, and a sharded pool measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # noqa: E402

from mergelaw.errors import MergelawError  # noqa: E402
from mergelaw.measure.checkpoints import INDEX, open_checkpoint, tensor_files  # noqa: E402
from mergelaw.measure.experts import load_pool, unflatten  # noqa: E402
from mergelaw.measure.sweep import read_sweep, run_sweep  # noqa: E402

SHARD = "40KB"  # a tiny Llama (~100k parameters, float32) in 4 shards


def _save(root: Path, base, experts, *, shard: str | None) -> tuple[Path, dict[str, Path]]:
    kwargs = {"max_shard_size": shard} if shard else {}
    base.save_pretrained(root / "base", safe_serialization=True, **kwargs)
    dirs = {}
    for name, expert in experts.items():
        expert.save_pretrained(root / name, safe_serialization=True, **kwargs)
        dirs[name] = root / name
    return root / "base", dirs


def _shards(folder: Path) -> dict[str, torch.Tensor]:
    """The independent reading: every shard file loaded whole, merged."""
    state: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("model-*-of-*.safetensors")):
        state.update(load_file(file))
    return state


@pytest.fixture(scope="module")
def pools(tmp_path_factory, tiny):
    """The same base and experts saved sharded and whole."""
    base, experts = tiny.models(3, seed=3, scale=0.05)
    sharded = _save(tmp_path_factory.mktemp("sharded"), base, experts, shard=SHARD)
    whole = _save(tmp_path_factory.mktemp("whole"), base, experts, shard=None)
    return sharded, whole


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for file in src.iterdir():
        (dst / file.name).write_bytes(file.read_bytes())
    return dst


def test_sharded_checkpoints_read_by_the_weight_map(pools):
    (base_dir, dirs), (whole_base, whole_dirs) = pools
    assert (base_dir / INDEX).is_file() and len(list(base_dir.glob("model-*.safetensors"))) > 1
    weight_map = json.loads((base_dir / INDEX).read_text())["weight_map"]
    assert {n: p.name for n, p in tensor_files(base_dir).items()} == weight_map
    base = _shards(base_dir)
    assert set(open_checkpoint(base_dir).tensors) == set(base)
    pool = load_pool(base_dir, dirs)
    for i, e in enumerate(dirs):
        expert = _shards(dirs[e])
        for name, t in unflatten(pool.task_vectors[i], pool.layout).items():
            assert torch.equal(t, expert[name] - base[name]), name
    same = load_pool(whole_base, whole_dirs)
    assert [s.name for s in pool.layout] == [s.name for s in same.layout]
    assert torch.equal(pool.base_flat, same.base_flat)
    assert torch.equal(pool.task_vectors, same.task_vectors)


def test_index_wins_over_consolidated_copies(pools, tmp_path):
    """A stale model.safetensors and a Mistral-style consolidated.safetensors (other names)
    beside the shards: the shards are read, for the task vectors and for the evaluated base."""
    (base_dir, dirs), _ = pools
    base = _copy(base_dir, tmp_path / "base")
    expert = _copy(dirs["d0"], tmp_path / "d0")
    for folder in (base, expert):
        shards = _shards(folder)
        save_file({n: t + 1.0 for n, t in shards.items()}, folder / "model.safetensors")
        mistral = {"layers.0.attention.wq.weight": torch.zeros(2, 2)}  # another naming
        save_file(mistral, folder / "consolidated.safetensors")
    pool = load_pool(base, {"d0": expert}, exclude=r"norm")
    truth = _shards(base)
    got = unflatten(pool.base_flat, pool.layout)
    assert all(torch.equal(got[n], truth[n]) for n in got)
    vector = unflatten(pool.task_vectors[0], pool.layout)
    other = _shards(expert)
    assert all(torch.equal(vector[n], other[n] - truth[n]) for n in vector)
    params = dict(pool.model.named_parameters())  # excluded tensors: the evaluated base's own
    assert torch.equal(params["model.norm.weight"], truth["model.norm.weight"])


def test_missing_shard_names_the_file_and_a_tensor(pools, tmp_path):
    (base_dir, dirs), _ = pools
    expert = _copy(dirs["d1"], tmp_path / "d1")
    weight_map = json.loads((expert / INDEX).read_text())["weight_map"]
    gone = sorted(set(weight_map.values()))[-1]
    first = next(n for n, f in weight_map.items() if f == gone)
    (expert / gone).unlink()
    with pytest.raises(MergelawError) as err:
        load_pool(base_dir, {"d1": expert})
    assert str(err.value) == (
        f"{expert / gone}: no such shard (the {INDEX} maps tensor {first!r} to it; expected "
        "every shard it names in the folder)"
    )


def test_tensor_missing_from_its_shard_is_named(pools, tmp_path):
    (base_dir, dirs), _ = pools
    expert = _copy(dirs["d2"], tmp_path / "d2")
    index = json.loads((expert / INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    name = next(n for n, f in index["weight_map"].items() if f == shards[0])
    index["weight_map"][name] = shards[1]  # the index says shard 2, the tensor is in shard 1
    (expert / INDEX).write_text(json.dumps(index))
    match = (
        rf"{shards[1]}: no tensor '{name}' \(the {INDEX} maps it to this shard; expected it "
        r"here, found \d+ other tensors\)"
    )
    with pytest.raises(MergelawError, match=match):
        load_pool(base_dir, {"d2": expert})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", r"model.safetensors.index.json: not valid JSON"),
        ('{"metadata": {}}', r"model.safetensors.index.json: no 'weight_map' \(expected a table"),
        ('{"weight_map": {"lm_head.weight": "../x.safetensors"}}',
         r"tensor 'lm_head.weight' maps to '../x.safetensors' \(expected a file name in"),
    ],
)  # fmt: skip
def test_bad_index_is_one_line(pools, tmp_path, text, match):
    (base_dir, dirs), _ = pools
    expert = _copy(dirs["d0"], tmp_path / "d0")
    (expert / INDEX).write_text(text)
    with pytest.raises(MergelawError, match=match) as err:
        load_pool(base_dir, {"d0": expert})
    assert "\n" not in str(err.value)


def test_without_index_a_tensor_in_two_files_is_refused(pools, tmp_path):
    _, (whole_base, whole_dirs) = pools
    expert = _copy(whole_dirs["d0"], tmp_path / "d0")
    (expert / "model.safetensors").rename(expert / "weights-a.safetensors")
    save_file({"lm_head.weight": torch.zeros(260, 32)}, expert / "weights-b.safetensors")
    match = (
        r"weights-b.safetensors: tensor 'lm_head.weight' is also in weights-a.safetensors "
        r"\(expected each tensor in one file"
    )
    with pytest.raises(MergelawError, match=match):
        load_pool(whole_base, {"d0": expert})
    (expert / "weights-b.safetensors").unlink()  # one file of any name is read as before
    pool = load_pool(whole_base, {"d0": expert})
    reference = load_pool(whole_base, {"d0": whole_dirs["d0"]})
    assert torch.equal(pool.task_vectors[0], reference.task_vectors[0])


def test_sweep_over_a_sharded_pool_gives_the_unsharded_rows(pools, tmp_path):
    (base_dir, dirs), (whole_base, whole_dirs) = pools
    text = "Integrate x^2 dx from 0 to 1 to get 1/3; then 2 * 3 = 6. " * 3
    (tmp_path / "d0.txt").write_text(text)
    tables = []
    for name, base, experts in (("sharded", base_dir, dirs), ("whole", whole_base, whole_dirs)):
        lines = [f'base = "{base}"', 'name = "tiny"', 'tokenizer = "bytes"', "[experts]"]
        lines += [f'{e} = "{p}"' for e, p in experts.items()]
        lines += ["[eval]", "max_length = 48", "batch_tokens = 1024", "[eval.domains]"]
        lines += ['d0 = "d0.txt"', "[[methods]]", 'name = "task_arithmetic"']
        (tmp_path / f"{name}.toml").write_text("\n".join(lines) + "\n")
        spec = read_sweep(tmp_path / f"{name}.toml")
        table = run_sweep(spec, tmp_path / name, device="cpu", progress=False)
        tables.append(table.sort_values("subset").reset_index(drop=True))
    sharded, whole = tables
    assert len(sharded) == 7  # k = 1..3 of 3 experts, one domain
    assert sharded["loss"].tolist() == whole["loss"].tolist()
    assert sharded["n_params"].tolist() == whole["n_params"].tolist()
