"""Make a tiny pool on disk: one base model and six domain experts, full fine-tunes and LoRA.

A stand-in for what a team already has (a base checkpoint and its fine-tuned experts), made here
in under a minute on a laptop CPU, offline: nothing comes from a hub.

    python make_pool.py            # writes pool/ and heldout/ next to this file (or --out DIR)

What it writes:

- ``heldout/<domain>.txt``: held-out text per domain (one document per file), the eval texts.
- ``pool/base/``: a tiny Llama (from a transformers config, random init, then briefly pretrained
  on all six domains) with a byte-level BPE tokenizer trained on the same text.
- ``pool/<domain>/``: full fine-tunes of the base on one domain (``code``, ``math``, ``legal``).
- ``pool/<domain>/``: PEFT LoRA adapters on the base (``recipes``, ``weather``, ``sports``):
  ``adapter_config.json`` + ``adapter_model.safetensors``, as ``save_pretrained`` writes them.

The six domains are generated text (templates and word lists, seeded), so the example needs no
data download; each has its own vocabulary and phrasing on a shared English backbone: enough for
a real merge-loss curve (the loss falls as experts are added, and a subset holding the evaluated
domain's own expert does better than one without it). Training is seeded: the same machine
makes the same pool.
"""

from __future__ import annotations

import argparse
import random
import time
import warnings
from pathlib import Path

DOMAINS = ("code", "math", "legal", "recipes", "weather", "sports")
FULL = ("code", "math", "legal")  # full fine-tunes; the rest are LoRA adapters
VOCAB_SIZE = 512
SEQ_LEN = 64


# ----------------------------------------------------------------------------- text


def _code(r: random.Random) -> str:
    name = r.choice(["total", "count", "scale", "merge", "parse", "render", "load", "clean"])
    arg = r.choice(["items", "values", "rows", "text", "path", "data"])
    var = r.choice(["result", "out", "acc", "buf"])
    op = r.choice(["+", "-", "*"])
    n = r.randint(0, 9)
    return (
        f"def {name}_{arg}({arg}, n={n}):\n"
        f"    {var} = {r.choice(['0', '[]', 'None'])}\n"
        f"    for x in {arg}:\n"
        f"        if x > n:\n"
        f"            {var} = {var} {op} x\n"
        f"    return {var}\n"
    )


def _math(r: random.Random) -> str:
    a, b = r.randint(2, 40), r.randint(2, 40)
    c = r.randint(2, 9)
    return r.choice(
        [
            f"Let x = {a}. Then x + {b} = {a + b}, and {c}x = {c * a}.",
            f"The sum of {a} and {b} is {a + b}; their product is {a * b}.",
            f"If y = {c}, then y squared is {c * c} and {a}y = {a * c}.",
            f"Subtract {b} from {a + b} to get {a}. Divide {a * c} by {c} to get {a}.",
        ]
    )


def _legal(r: random.Random) -> str:
    party = r.choice(["The tenant", "The lessee", "The buyer", "The contractor", "The employee"])
    other = r.choice(["the landlord", "the lessor", "the seller", "the owner", "the employer"])
    duty = r.choice(
        ["pay the rent", "deliver the goods", "complete the works", "give written notice",
         "keep the premises in good repair"]
    )  # fmt: skip
    days = r.choice([7, 14, 30, 60, 90])
    return (
        f"{party} shall {duty} within {days} days. Failing this, {other} may terminate this "
        f"agreement under clause {r.randint(2, 19)}.{r.randint(1, 9)}, without prejudice to any "
        f"other remedy."
    )


def _recipes(r: random.Random) -> str:
    amount = r.choice(["2 cups", "1 tablespoon", "3 teaspoons", "200 grams", "half a cup"])
    food = r.choice(["flour", "sugar", "butter", "rice", "onions", "garlic", "tomatoes", "milk"])
    verb = r.choice(["Stir", "Whisk", "Simmer", "Bake", "Fry", "Chop"])
    minutes = r.choice([5, 10, 15, 20, 30, 45])
    return (
        f"Add {amount} of {food} to the bowl. {verb} for {minutes} minutes, then season with "
        f"salt and pepper and serve {r.choice(['warm', 'hot', 'cold', 'at once'])}."
    )


def _weather(r: random.Random) -> str:
    day = r.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"])
    city = r.choice(["Oslo", "Lima", "Cairo", "Perth", "Quebec", "Lisbon", "Nairobi", "Osaka"])
    sky = r.choice(["light rain", "clear skies", "thick fog", "scattered showers", "snow"])
    wind = r.choice(["north", "south", "east", "west"])
    return (
        f"On {day} the temperature in {city} reached {r.randint(-5, 35)} degrees with {sky}, "
        f"and winds from the {wind} at {r.randint(5, 60)} kilometres per hour."
    )


def _sports(r: random.Random) -> str:
    player = r.choice(["Alvarez", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Brennan"])
    team = r.choice(["United", "Rovers", "Athletic", "City", "Wanderers"])
    how = r.choice(["from a corner kick", "with a header", "on the counter", "from the spot"])
    return (
        f"In the {r.randint(1, 90)}th minute {player} scored {how}, and {team} led "
        f"{r.randint(1, 4)}-{r.randint(0, 3)} at full time."
    )


GENERATORS = {
    "code": _code,
    "math": _math,
    "legal": _legal,
    "recipes": _recipes,
    "weather": _weather,
    "sports": _sports,
}


def domain_text(domain: str, n: int, seed: int) -> str:
    """``n`` generated passages of one domain, separated by blank lines (seeded)."""
    r = random.Random(f"{domain}/{seed}")
    return "\n\n".join(GENERATORS[domain](r) for _ in range(n))


# ----------------------------------------------------------------------------- training


def _batches(ids, n_steps: int, batch: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    data = torch.tensor(ids)
    for _ in range(n_steps):
        start = torch.randint(0, len(data) - SEQ_LEN - 1, (batch,), generator=g)
        yield torch.stack([data[s : s + SEQ_LEN] for s in start.tolist()])


def _train(model, ids, *, steps: int, lr: float, seed: int, batch: int = 16) -> float:
    """A few AdamW steps of next-token loss on the token ids; returns the last loss."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    loss = None
    for x in _batches(ids, steps, batch, seed):
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return loss.item()


def make_pool(out: Path, *, steps: int = 80, base_steps: int = 60) -> None:
    """Write ``heldout/`` and ``pool/`` under ``out`` (see the module docstring)."""
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from mergelaw.measure.lab.bpe import EOS, train_bpe

    try:
        import peft
    except ImportError:
        raise SystemExit("make_pool.py needs peft for the LoRA experts: pip install peft") from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)  # tiny models: one thread beats several that wait for each other
    t0 = time.perf_counter()

    def done(what: str) -> None:
        print(f"{what} ({time.perf_counter() - t0:.0f} s)", flush=True)

    train = {d: domain_text(d, 400, seed=0) for d in DOMAINS}
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    for d in DOMAINS:  # other passages than the training text's (another seed)
        (out / "heldout" / f"{d}.txt").write_text(domain_text(d, 40, seed=1), encoding="utf-8")

    # The tokenizer: a byte-level BPE on the training text, saved with the base (and the full
    # fine-tunes, as Hugging Face checkpoints usually are); mergelaw evaluates with the base's.
    bpe = train_bpe([train[d] for d in DOMAINS], vocab_size=VOCAB_SIZE)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, pad_token=EOS
    )
    ids = {d: bpe.encode(train[d]).ids for d in DOMAINS}

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=bpe.token_to_id(EOS),
        eos_token_id=bpe.token_to_id(EOS),
    )
    base = LlamaForCausalLM(config)
    loss = _train(base, [i for d in DOMAINS for i in ids[d]], steps=base_steps, lr=3e-3, seed=0)
    base_dir = out / "pool" / "base"
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    done(f"pool/base: {base.num_parameters():,} parameters, train loss {loss:.2f}")

    for i, d in enumerate(DOMAINS):
        model = LlamaForCausalLM.from_pretrained(base_dir)
        target = out / "pool" / d
        if d in FULL:
            loss = _train(model, ids[d], steps=steps, lr=1e-3, seed=1 + i)
            model.save_pretrained(target)
            tokenizer.save_pretrained(target)
            kind = "full fine-tune"
        else:
            lora = peft.LoraConfig(
                r=8, lora_alpha=16,
                target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            )  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = peft.get_peft_model(model, lora)
                loss = _train(model, ids[d], steps=steps, lr=5e-3, seed=1 + i)
                model.save_pretrained(target)
            kind = "LoRA adapter"
        done(f"pool/{d}: {kind}, train loss {loss:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    make_pool(args.out)


if __name__ == "__main__":
    main()
