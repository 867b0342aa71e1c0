"""`mergelaw plan` and `mergelaw compare` end to end on a saved fit: tables, JSON, errors."""

import json

import pytest
from typer.testing import CliRunner

from mergelaw.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def points_path(plan_table, tmp_path_factory):
    """A new setting's losses at k = 1, 2, 4 (physics is not in the fit)."""
    from mergelaw.simulate import simulate_curves

    table = simulate_curves(
        sizes_b=(0.5, 3.0, 14.0), domains=("physics",), methods=("average",), seed=9
    )
    rows = table[(table["n_params"] == 3e9) & table["k"].isin([1, 2, 4])]
    path = tmp_path_factory.mktemp("points") / "points.csv"
    rows[["k", "loss"]].to_csv(path, index=False)
    return path


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_plan_target_prints_and_writes_json(fake_fit_path, tmp_path):
    out = tmp_path / "target.json"
    result = _run(
        "plan", fake_fit_path, "target", "--loss", 0.3, "--size", 3, "--family", "average/code",
        "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "experts for target" in result.output and "unreachable at this size" in result.output
    assert "flag: " in result.output and "provenance: data_hash" in result.output
    answer = json.loads(out.read_text())
    assert answer["query"] == "experts for target" and answer["flag"]
    decision = answer["decision"]["qwen2/average/code"]
    assert decision["status"] == "unreachable at this size" and decision["k"] == "inf"


def test_plan_stop_budget_forecast(fake_fit_path, points_path):
    result = _run("plan", fake_fit_path, "stop", "--size", 3, "--epsilon", 0.003)
    assert result.exit_code == 0, result.output
    assert "k80 (to k=9)" in result.output and "stop at k =" in result.output
    result = _run(
        "plan", fake_fit_path, "stop", "--size", 3, "--epsilon", 0.003, "--losses", points_path
    )
    assert result.exit_code == 0, result.output
    assert "CONTINUE" in result.output or "STOP" in result.output
    result = _run(
        "plan", fake_fit_path, "budget", "--budget", 30, "--base-costs", "0.5=1,3=5,14=20",
        "--expert-cost", 2,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "best within 30: N = " in result.output
    result = _run(
        "plan", fake_fit_path, "forecast", "--size", 72, "--family", "ties/code", "--k", "1,9"
    )
    assert result.exit_code == 0, result.output
    assert "expected loss" in result.output and "observed loss" in result.output
    result = _run("plan", fake_fit_path, "forecast", "--size", 3, "--points", points_path)
    assert result.exit_code == 0, result.output
    assert "few-point forecast" in result.output
    assert "NUTS, the population as prior" in result.output
    assert "divergences" in result.output and "R-hat" in result.output


def test_compare_prints_contrasts_and_verdicts(fake_fit_path, tmp_path):
    out = tmp_path / "compare.json"
    result = _run(
        "compare",
        fake_fit_path,
        "--methods",
        "average,ties",
        "--k",
        9,
        "--pooled-only",
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "floor (pooled): " in result.output and "P(A<B)" in result.output
    table = json.loads(out.read_text())["table"]
    assert {row["quantity"] for row in table} == {"floor", "tail amplitude", "loss at k=9"}


def test_errors_are_one_line_with_exit_code_2(fake_fit_path, tmp_path):
    cases = [
        (["plan", tmp_path / "none.nc", "forecast", "--size", 3], "no such fit file"),
        (["plan", fake_fit_path, "forecast", "--size", 3, "--family", "physics"], "not a family"),
        (["plan", fake_fit_path, "target", "--loss", 0.5, "--size", -2], "--size -2: expected"),
        (
            [
                "plan",
                fake_fit_path,
                "budget",
                "--budget",
                1,
                "--base-costs",
                "3=x",
                "--expert-cost",
                1,
            ],
            "expected SIZE=COST",
        ),
        (["compare", fake_fit_path, "--methods", "average"], "expected two different methods"),
    ]
    for args, message in cases:
        result = _run(*args)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


def test_json_dash_writes_the_answer_alone_to_stdout(fake_fit_path, tmp_path, monkeypatch):
    """`--json -`: stdout is the JSON answer and nothing else (the table, flag and provenance
    go to stderr); list options take repeats as well as commas."""
    monkeypatch.chdir(tmp_path)
    result = _run(
        "plan", fake_fit_path, "forecast", "--size", 72, "--family", "ties/code", "--k", 1,
        "--k", 9, "--json", "-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["query"] == "forecast" and answer["decision"]["k"] == [1.0, 9.0]
    assert "flag: " in result.stderr and "provenance: data_hash" in result.stderr
    result = _run(
        "compare", fake_fit_path, "--methods", "average", "--methods", "ties", "--k", 9,
        "--pooled-only", "--json", "-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)["table"]
    assert {row["quantity"] for row in table} == {"floor", "tail amplitude", "loss at k=9"}
    assert "floor (pooled): " in result.stderr
    assert list(tmp_path.iterdir()) == []  # no file named '-'


# ---- --emit-mergekit: the planned merge as a mergekit config, run by mergekit ------------------

POOL = ("code", "biology", "law", "art")  # biology is a LoRA adapter; code/biology: fit domains
ATOL = 5e-6


@pytest.fixture(scope="module")
def pool_sweep(tmp_path_factory):
    """A tiny Llama base, three full fine-tunes and one PEFT LoRA adapter on disk, and the sweep
    file (native TOML) that names them; the fit's families are code and biology."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    root = tmp_path_factory.mktemp("emit_pool")
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=260, max_position_embeddings=64,
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(config).eval()
    base.save_pretrained(root / "base")
    for name in POOL:
        expert = transformers.LlamaForCausalLM(config).eval()
        expert.load_state_dict(base.state_dict())
        if name == "biology":
            lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"])
            expert = peft.get_peft_model(expert, lora)
        with torch.no_grad():
            for p in expert.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))
        expert.save_pretrained(root / name)
    (root / "code.txt").write_text("def f(x):\n    return x\n")
    sweep = root / "sweep.toml"
    sweep.write_text(
        'base = "base"\ntokenizer = "bytes"\n[experts]\n'
        + "".join(f'{name} = "{name}"\n' for name in POOL)
        + '[eval.domains]\ncode = "code.txt"\n[[methods]]\nname = "average"\n'
    )
    return sweep


def _mergekit_merge(config_path, out):
    """mergekit's own merge of the written file (its Python API, offline: no model card)."""
    import warnings

    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from safetensors.torch import load_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_merge(
            MergeConfiguration.model_validate(yaml.safe_load(config_path.read_text())),
            str(out),
            MergeOptions(
                copy_tokenizer=False, write_model_card=False, quiet=True,
                lora_merge_cache=str(out.parent / "lora_cache"),
            ),
        )  # fmt: skip
    return load_file(out / "model.safetensors")


def _our_merge(sweep, family_row, chosen):
    """mergelaw's merge engine on the same experts with the family's method."""
    from mergelaw.measure.experts import load_pool, unflatten
    from mergelaw.measure.merge import merge
    from mergelaw.measure.methods import method_spec
    from mergelaw.measure.sweep import read_sweep

    spec = read_sweep(sweep)
    pool = load_pool(spec.base, spec.experts)
    method = method_spec(family_row["method"], json.loads(family_row["method_params"]))
    vectors = [pool.task_vectors[pool.index(e)] for e in chosen]
    flat = merge(pool.base_flat, vectors, method, pool.layout, expert_ids=list(chosen))
    return unflatten(flat, pool.layout), unflatten(pool.base_flat, pool.layout)


def _assert_mergekit_is_ours(config_path, sweep, family_row, chosen, tmp_path):
    ref = _mergekit_merge(config_path, tmp_path / "mergekit_out")
    ours, base = _our_merge(sweep, family_row, chosen)
    assert sorted(ours) == sorted(ref), "mergekit wrote other tensors"
    moved = 0.0
    for name, got in ours.items():
        diff = (got - ref[name]).abs().max().item()
        assert diff <= ATOL, f"{name}: max |mergelaw - mergekit| = {diff}"
        moved = max(moved, (got - base[name]).abs().max().item())
    assert moved > 1e-3, "the merge left the base unchanged: the comparison would prove nothing"


def _family_row(fake_fit, label):
    families = fake_fit.families
    return families[families["label"] == label].iloc[0]


def test_emit_mergekit_from_stop_and_target_is_the_merge_mergekit_makes(
    fake_fit, fake_fit_path, pool_sweep, tmp_path
):
    """plan stop and plan target write the answer's k experts (the family's own expert first)
    as a mergekit config; mergekit's merge of that file equals mergelaw's merge of those
    experts (a LoRA adapter among them: BASE+ADAPTER)."""
    pytest.importorskip("mergekit")
    import yaml

    label = "qwen2/average/code"
    row = _family_row(fake_fit, label)
    # stop: k from the answer (capped at the pool's 4 experts, said in a note)
    out, answer = tmp_path / "stop.yaml", tmp_path / "stop.json"
    result = _run(
        "plan", fake_fit_path, "stop", "--size", 3, "--epsilon", 0.003, "--family", "average/code",
        "--json", answer, "--emit-mergekit", out, "--sweep", pool_sweep,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    d = json.loads(answer.read_text())["decision"][label]
    k = 1 if d["adding_experts"] == "makes it worse" else min(float(d["stop_at_k"]), len(POOL))
    assert k >= 2  # a merge of several experts, the LoRA adapter (second) among them
    chosen = ("code", *[e for e in POOL if e != "code"])[: int(k)]
    assert f"wrote {out}: mergekit config of {int(k)} experts ({', '.join(chosen)})" in (
        result.output
    )
    text = out.read_text()
    assert f"# {label} @ 3B: stop at k = " in text and f"# fit: {fake_fit_path} (data " in text
    assert yaml.safe_load(text)["merge_method"] == "linear"  # average, c = 1
    _assert_mergekit_is_ours(out, pool_sweep, row, chosen, tmp_path / "stop")

    # target: a loss reached by 2 or 3 experts (the forecast's upper bound at k = 3), with
    # the experts named: biology (LoRA) and law first
    result = _run(
        "plan", fake_fit_path, "forecast", "--size", 3, "--family", "average/code", "--k", 3,
        "--json", "-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["table"]
    loss = next(r["upper"] for r in rows if r["quantity"].startswith("expected loss"))
    out, answer = tmp_path / "target.yaml", tmp_path / "target.json"
    args = ["plan", fake_fit_path, "target", "--loss", loss, "--size", 3, "--family",
            "average/code", "--json", answer]  # fmt: skip
    result = _run(*args)
    assert result.exit_code == 0, result.output
    d = json.loads(answer.read_text())["decision"][label]
    assert d["status"] == "reachable" and 1 <= d["k"] <= 3
    named = ("biology", "law", "art", "code")[: int(d["k"])]
    result = _run(
        *args, "--emit-mergekit", out, "--sweep", pool_sweep, "--experts", ",".join(named)
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: mergekit config of {len(named)} experts ({', '.join(named)})" in (
        result.output
    )
    _assert_mergekit_is_ours(out, pool_sweep, row, named, tmp_path / "target")


def test_emit_mergekit_refusals_are_one_line_and_write_nothing(fake_fit_path, pool_sweep, tmp_path):
    out = tmp_path / "work" / "merge.yaml"
    (tmp_path / "work").mkdir()
    stop = ["plan", fake_fit_path, "stop", "--size", 3, "--epsilon", 0.003]
    emit = ["--emit-mergekit", out, "--sweep", pool_sweep]
    code = ["--family", "average/code"]
    cases = [
        ([*stop, *code, "--emit-mergekit", out], "--emit-mergekit " + str(out) + ": needs --sweep"),
        ([*stop, *code, "--sweep", pool_sweep], "--sweep: only with --emit-mergekit FILE"),
        ([*stop, *code, "--experts", "code"], "--experts: only with --emit-mergekit FILE"),
        ([*stop, *emit], "--emit-mergekit needs one family (--family; this fit has 4: "),
        ([*stop, *emit, "--family", "new"], "--emit-mergekit needs a family of the fit"),
        (
            [*stop, *emit, *code, "--losses", tmp_path / "points.csv"],
            "it does not apply with --losses",
        ),
        ([*stop, *emit, *code, "--experts", "code,physics"], "expert 'physics' is not in the pool"),
        ([*stop, *emit, *code, "--experts", "code,code"], "an expert is named twice"),
        (
            [*stop, *code, "--emit-mergekit", out, "--sweep", tmp_path / "none.toml"],
            "no such sweep file",
        ),
        ([*stop, *code, "--emit-mergekit", tmp_path, "--sweep", pool_sweep], "is a folder"),
        ([*stop, *code, "--emit-mergekit", "-", "--sweep", pool_sweep], "expected a file path"),
        (
            ["plan", fake_fit_path, "target", "--loss", 0.3, "--size", 3, *code, *emit],
            "--emit-mergekit: qwen2/average/code @ 3B: the target loss 0.3 is unreachable at "
            "this size (P >= 0.9); there is no planned merge to write",
        ),
    ]
    for args, message in cases:
        result = _run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (message, result.stderr)
        assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr
        assert result.stdout == "", result.stdout
        assert list((tmp_path / "work").iterdir()) == [], args
    # --experts names k experts: a count that is not the answer's k is refused
    result = _run(*stop, *code, "--json", tmp_path / "s.json")
    d = json.loads((tmp_path / "s.json").read_text())["decision"]["qwen2/average/code"]
    # (at 3B the simulated code curve's per-k means fall 0.015 nats from k = 1 to 9, within a
    # curve's own drop spread of 0.02: whether it falls at all is "undecided"; its stop k stands)
    assert d["adding_experts"] != "makes it worse" and float(d["stop_at_k"]) >= 2
    result = _run(*stop, *code, *emit, "--experts", "law")
    assert result.exit_code == 2
    assert "--experts law: 1 experts, but the answer merges k = " in result.stderr
    assert not out.exists()


def test_size_defaults_to_the_fits_one_size_only(fake_fit_path):
    result = _run("plan", fake_fit_path, "forecast", "--family", "average/code")
    assert result.exit_code == 2
    assert "--size: this fit has 3 base sizes (0.5B, 3B, 14B); give the one to plan for" in (
        result.stderr
    )
