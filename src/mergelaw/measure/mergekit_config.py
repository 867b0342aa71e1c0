"""mergekit merge configs in and out: a mergekit YAML as a sweep, a planned merge as mergekit YAML.

In: ``mergelaw measure`` takes a mergekit merge config (``base_model``, ``models``,
``merge_method``, ``parameters``) with the sweep's own keys under a ``mergelaw:`` section, which
mergekit itself ignores, so one file serves both tools::

    merge_method: ties
    base_model: ckpt/base
    models:
      - model: ckpt/code              # expert id: the folder's name ("code")
        parameters: {weight: 1.0, density: 0.2}
      - model: ckpt/base+ckpt/math-lora   # a LoRA adapter on the base: id "math-lora"
        parameters: {weight: 1.0, density: 0.2}
    parameters: {lambda: 1.0, normalize: true}
    dtype: float32
    mergelaw:                         # the sweep's own keys (mergekit ignores this section)
      k: {min: 1, max: 2}             # name, tokenizer, k, seeds, sampler, subsets_per_unit, eval
      sampler: exhaustive             # and, for linear only, base (the experts' base)
      eval:
        domains: {code: heldout/code.txt}

The pool is the listed models (a model equal to ``base_model`` is the base, as in mergekit); each
measured k-subset is the model mergekit makes from this config with ``models`` cut to that subset,
so the k = M row is the config's own merge. Paths are relative to the file's folder (run mergekit
from there for the same meaning). Each parameter maps as follows (w: the models' common weight,
lambda: ``parameters.lambda``, default 1):

======================  ======================================================================
mergekit                mergelaw (``MethodSpec``, recorded in ``method_params``)
======================  ======================================================================
linear                  average: c = 1, combine = mean (normalize must be true). The base is
                        ``mergelaw.base``: mergekit's linear averages a ``base_model`` in as one
                        more model, so ``base_model`` is refused for linear
task_arithmetic         task_arithmetic: normalize false (default) -> combine = sum, c = lambda*w;
                        normalize true -> combine = mean, c = lambda
ties                    ties: density = density, trim_scope = tensor, trim_min_one = true,
                        sign_method = sum, sign_tie = positive; normalize true (default) ->
                        combine = disjoint_mean, c = lambda (mergekit divides by the agreeing
                        weights' sum = their count x w: divide_by = count); false ->
                        disjoint_sum, c = lambda*w
dare_linear             dare: p = 1 - density (mergekit's density is a keep rate); rescale true
                        (default) -> rescale = l1 (each tensor back to its L1 norm), false ->
                        none; normalize false (default) -> combine = sum, c = lambda*w; true ->
                        mean, c = lambda
dare_ties               dare_ties: p, rescale as dare_linear; sign_method = sum, sign_tie =
                        positive; normalize false (default) -> disjoint_sum, c = lambda*w; true ->
                        disjoint_mean, c = lambda
weight                  one value for every model (> 0; a model's own or ``parameters.weight``);
                        it folds into c as above. Unequal weights are refused: a sweep merges
                        k-subsets with equal weights
density                 ties: the kept fraction; DARE: p = 1 - density; 0 < density <= 1, one
                        value for every model; default 1 as in mergekit (no trim, no drops)
lambda, normalize       top-level ``parameters`` only (mergekit reads them there alone)
rescale                 dare_linear / dare_ties as above; ties accepts only false (mergekit's true
                        rescales trimmed tensors, which mergelaw's TIES does not)
int8_mask               false only: true is refused (a mergekit memory option)
dtype, out_dtype,       accepted, no effect on the measurement: mergelaw merges in float32
chat_template           (mergekit gives the same weights with dtype float32; bfloat16 rounds)
tokenizer_source        absent or base; union or a model is refused (it changes the vocabulary)
======================  ======================================================================

Refused in one line naming the key and value: other merge methods (breadcrumbs and
breadcrumbs_ties drop the largest magnitudes too, which mergelaw's engine has no step for; slerp,
della, model_stock, ...), ``slices`` and ``modules``, a ``tokenizer`` section, gradients and
filtered values (``[0.2, 0.5]``, ``[{filter: mlp, value: 0.5}]``), unequal weights or densities,
density or rescale on a method without sparsification, revisions (``model@rev``), a LoRA on another
model than the base, and the sweep keys ``experts``, ``methods`` and ``exclude`` (the first two
come from the mergekit part; ``exclude`` would make the measured merge differ from mergekit's).

Out: ``mergekit_config`` writes a merge ("these k experts with this method") as a mergekit config
that makes the same model, the inverse of the table above (average with c = 1 -> linear without
base_model; every weight 1, so c becomes lambda); ``emit_mergekit`` does it for a planning answer
(k experts of a sweep's pool, the fit family's method) and writes the file. Not every
``MethodSpec`` has a mergekit equivalent: DARE's ``rescale = inverse_keep`` (mergekit rescales by
the L1 norm only), a global TIES trim, ``sign_method = count``, ``sign_tie = global``,
``trim_min_one = false``, ``merge_embeddings = false``, a trim without the disjoint merge and a
sweep's ``exclude`` are refused in one line. DARE drops are random: mergekit draws them from
torch's global generator (``--random-seed``), so an emitted DARE config makes a model from the same
distribution, equal to mergelaw's when the masks are equal (the tests seed mergekit's draws with
mergelaw's to check exactly that). The full table: docs/mergekit.md.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergelaw.errors import MergelawError
from mergelaw.measure.methods import MethodSpec, method_spec

if TYPE_CHECKING:
    from mergelaw.measure.sweep import SweepSpec

#: The key of the sweep's own section in a mergekit config.
SECTION = "mergelaw"
#: mergekit merge methods mergelaw's engine reproduces.
MERGEKIT_METHODS: tuple[str, ...] = (
    "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties",
)  # fmt: skip
#: Why mergekit's other methods are refused (default: no such step in mergelaw's engine).
_REFUSED_WHY = {
    "breadcrumbs": "it also drops the largest magnitudes by gamma, a step mergelaw's engine lacks",
    "breadcrumbs_ties": "it also drops the largest magnitudes (gamma), a step mergelaw's engine "
    "lacks",
}
#: Top-level keys of a mergekit config that are taken (the rest of mergekit's are refused).
_TOP_KEYS = (
    "merge_method", "base_model", "models", "parameters", "dtype", "out_dtype",
    "tokenizer_source", "chat_template", SECTION,
)  # fmt: skip
_MERGEKIT_ONLY = {
    "slices": "a sweep merges whole models (expected 'models')",
    "modules": "a sweep merges whole models (expected 'models')",
    "tokenizer": "it builds a new vocabulary; mergelaw evaluates with the base's tokenizer, or "
    "'mergelaw.tokenizer'",
}
#: Keys of a native sweep file: in a mergekit config they go under the section.
_NATIVE_KEYS = (
    "base", "name", "tokenizer", "experts", "eval", "methods", "k", "seeds", "sampler",
    "exclude", "subsets_per_unit",
)  # fmt: skip
#: Section keys that are not taken, and why.
_SECTION_REFUSED = {
    "experts": "the experts are the config's 'models'",
    "methods": "the method is the config's 'merge_method' and 'parameters'",
    "exclude": "mergekit merges every tensor, so the measured merge would not be the config's",
}
#: The section keys the sweep parser reads (``base`` is read here, for linear).
SECTION_KEYS: tuple[str, ...] = (
    "name", "tokenizer", "k", "seeds", "sampler", "subsets_per_unit", "eval",
)  # fmt: skip

_SHARED = {"lambda": 1.0, "normalize": None, "rescale": None, "int8_mask": False}
_PER_MODEL = ("weight", "density")
_BOOLS = ("normalize", "rescale", "int8_mask")
#: mergekit's defaults per method: (normalize, rescale), as in its registry.
_MK_DEFAULTS = {
    "linear": (True, None),
    "task_arithmetic": (False, False),
    "ties": (True, False),
    "dare_linear": (False, True),
    "dare_ties": (False, True),
}


@dataclass(frozen=True)
class MergekitMerge:
    """What a mergekit config merges, in mergelaw's terms, and its sweep section (unparsed)."""

    base: Path
    experts: dict[str, Path]  # expert id -> checkpoint folder (a LoRA adapter's folder for a+b)
    method: MethodSpec
    sweep: dict[str, Any]


def is_mergekit_config(raw: Mapping[str, Any]) -> bool:
    """Whether a parsed sweep file is a mergekit config (it names a ``merge_method``)."""
    return "merge_method" in raw


# ----------------------------------------------------------------------------- in


def read_mergekit(raw: Mapping[str, Any], path: str | Path) -> MergekitMerge:
    """Read a mergekit config (parsed YAML) as the base, the experts and one ``MethodSpec``.

    Relative paths are relative to ``path``'s folder. Raises a one-line MergelawError naming
    ``path`` and the key at fault for anything mergelaw cannot reproduce exactly.
    """
    path = Path(path)
    src, root = str(path), path.parent
    _check_top(raw, src)
    merge_method = raw["merge_method"]
    if merge_method not in MERGEKIT_METHODS:
        why = _REFUSED_WHY.get(str(merge_method), "mergelaw's merge engine has no such method")
        raise MergelawError(
            f"{src}: merge_method {merge_method!r} is not supported ({why}; expected one of: "
            f"{', '.join(MERGEKIT_METHODS)})"
        )
    section = raw.get(SECTION)
    if section is None:
        raise MergelawError(
            f"{src}: no '{SECTION}:' section (expected the sweep's own keys there: "
            f"eval.domains and optionally {', '.join(k for k in SECTION_KEYS if k != 'eval')})"
        )
    if not isinstance(section, dict):
        raise MergelawError(f"{src}: '{SECTION}' = {section!r} (expected a table of settings)")
    section = dict(section)
    for key, why in _SECTION_REFUSED.items():
        if key in section:
            raise MergelawError(
                f"{src}: '{SECTION}.{key}' is not taken in a mergekit config ({why})"
            )
    linear = merge_method == "linear"
    if linear:
        if raw.get("base_model") is not None:
            raise MergelawError(
                f"{src}: base_model with merge_method linear (mergekit averages it in as one more "
                f"model; expected no base_model, and the experts' base as '{SECTION}.base')"
            )
        if "base" not in section:
            raise MergelawError(
                f"{src}: missing '{SECTION}.base' (expected the experts' base checkpoint folder: "
                "linear has no base_model)"
            )
        base_text = _path_text(section.pop("base"), f"{SECTION}.base", src)
    else:
        if "base" in section:
            raise MergelawError(
                f"{src}: '{SECTION}.base' is not taken with merge_method {merge_method!r} "
                "(the base is base_model)"
            )
        if raw.get("base_model") is None:
            raise MergelawError(
                f"{src}: missing 'base_model' (expected the experts' base checkpoint folder: "
                f"{merge_method} merges task vectors from it)"
            )
        base_text = _path_text(raw["base_model"], "base_model", src)
    base = root / base_text
    models = raw.get("models")
    if not isinstance(models, list) or not models:
        raise MergelawError(
            f"{src}: 'models' = {models!r} (expected a list of {{model: FOLDER, parameters: ...}})"
        )
    shared_given = _params(raw.get("parameters"), "parameters", src)
    experts: dict[str, Path] = {}
    per_model: list[tuple[str, dict[str, Any]]] = []
    for i, entry in enumerate(models):
        where = f"models[{i}]"
        if not isinstance(entry, dict) or "model" not in entry:
            raise MergelawError(f"{src}: {where} = {entry!r} (expected {{model: FOLDER, ...}})")
        unknown = sorted(set(entry) - {"model", "parameters"})
        if unknown:
            raise MergelawError(
                f"{src}: unknown setting '{where}.{unknown[0]}' (expected model, parameters)"
            )
        folder = _model_folder(entry["model"], base, root, linear, f"{where}.model", src)
        params = _params(entry.get("parameters"), f"{where}.parameters", src)
        if folder is None:  # the base, listed among the models as mergekit allows
            continue
        expert_id = folder.name
        if expert_id in experts:
            same = _same(experts[expert_id], folder)
            raise MergelawError(
                f"{src}: {where}.model {entry['model']!r}: "
                + (
                    "listed twice (expected each model once)"
                    if same
                    else f"a second model named {expert_id!r} (expert ids are the folders' "
                    "names; expected distinct names)"
                )
            )
        experts[expert_id] = folder
        per_model.append((where, params))
    if not experts:
        raise MergelawError(f"{src}: 'models' lists only the base (expected at least one expert)")
    method = _method(str(merge_method), shared_given, per_model, src)
    return MergekitMerge(base=base, experts=experts, method=method, sweep=section)


def _check_top(raw: Mapping[str, Any], src: str) -> None:
    for key in raw:
        if key in _MERGEKIT_ONLY:
            raise MergelawError(f"{src}: '{key}' is not taken ({_MERGEKIT_ONLY[key]})")
        if key in _NATIVE_KEYS:
            raise MergelawError(
                f"{src}: '{key}' at the top level of a mergekit config (expected the sweep's own "
                f"keys under '{SECTION}:', mergekit's keys at the top)"
            )
        if key not in _TOP_KEYS:
            raise MergelawError(
                f"{src}: unknown setting {key!r} (expected some of: {', '.join(_TOP_KEYS)})"
            )
    source = raw.get("tokenizer_source")
    if source not in (None, "base"):
        raise MergelawError(
            f"{src}: tokenizer_source = {source!r} is not taken (it changes the vocabulary; "
            "expected base or none)"
        )
    for key in ("dtype", "out_dtype", "chat_template"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise MergelawError(f"{src}: {key} = {raw[key]!r} (expected a string)")


def _path_text(value: Any, key: str, src: str) -> str:
    if not isinstance(value, str) or not value:
        raise MergelawError(f"{src}: {key} = {value!r} (expected a checkpoint folder path)")
    if "@" in value:
        raise MergelawError(
            f"{src}: {key} = {value!r}: a revision names a hub model (expected a local folder)"
        )
    if "+" in value:
        raise MergelawError(
            f"{src}: {key} = {value!r}: a LoRA on the base is not a base (expected a folder)"
        )
    return value


def _model_folder(
    value: Any, base: Path, root: Path, linear: bool, key: str, src: str
) -> Path | None:
    """The expert's folder for a ``models[i].model``; None if it is the base itself."""
    if not isinstance(value, str) or not value:
        raise MergelawError(
            f"{src}: {key} = {value!r} (expected a folder path, or BASE+ADAPTER for a LoRA)"
        )
    if "@" in value:
        raise MergelawError(
            f"{src}: {key} = {value!r}: a revision names a hub model (expected a local folder)"
        )
    parts = value.split("+")
    if len(parts) > 2 or not all(parts):
        raise MergelawError(f"{src}: {key} = {value!r} (expected FOLDER or BASE+ADAPTER)")
    if len(parts) == 2:
        if not _same(root / parts[0], base):
            raise MergelawError(
                f"{src}: {key} = {value!r}: a LoRA on {parts[0]!r}, not on the base "
                f"{str(base)!r} (expected BASE+ADAPTER with the experts' base)"
            )
        return root / parts[1]
    folder = root / parts[0]
    if _same(folder, base):
        if linear:
            raise MergelawError(
                f"{src}: {key} = {value!r} is '{SECTION}.base' (linear would average the base in "
                "as one more model; expected only experts)"
            )
        return None
    return folder


def _same(a: Path, b: Path) -> bool:
    return os.path.normpath(a.absolute()) == os.path.normpath(b.absolute())


def _params(value: Any, key: str, src: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MergelawError(f"{src}: {key} = {value!r} (expected a table of parameters)")
    for name, v in value.items():
        if isinstance(v, list | dict):
            raise MergelawError(
                f"{src}: {key}.{name} = {v!r}: a gradient or filtered value (expected one value "
                "for every tensor: a sweep merges whole models with one setting)"
            )
    return dict(value)


def _method(
    merge_method: str,
    shared_given: dict[str, Any],
    per_model: list[tuple[str, dict[str, Any]]],
    src: str,
) -> MethodSpec:
    """Resolve the parameters as mergekit does (a model's own over the top level) and map them."""
    linear = merge_method == "linear"
    shared_keys = ("normalize",) if linear else tuple(_SHARED)
    model_keys = ("weight",) if linear else _PER_MODEL
    allowed = (*shared_keys, *model_keys)
    for name in shared_given:
        if name not in allowed:
            raise MergelawError(
                f"{src}: parameters.{name} is not a parameter of {merge_method} "
                f"(expected some of: {', '.join(allowed)})"
            )
    for where, params in per_model:
        for name in params:
            if name in shared_keys:
                raise MergelawError(
                    f"{src}: {where}.parameters.{name}: mergekit reads {name} from the top-level "
                    "'parameters' only (expected it there)"
                )
            if name not in model_keys:
                raise MergelawError(
                    f"{src}: {where}.parameters.{name} is not a parameter of {merge_method} "
                    f"(expected some of: {', '.join(model_keys)})"
                )
    if merge_method == "task_arithmetic":  # mergekit takes these and sparsifies nothing
        given = [("parameters", shared_given), *per_model]
        for where, params in given:
            for name in ("density", "rescale"):
                if name in params:
                    key = (
                        f"{where}.{name}" if where == "parameters" else f"{where}.parameters.{name}"
                    )
                    raise MergelawError(
                        f"{src}: {key} = {_shown(params[name])} has no effect with task_arithmetic "
                        f"(mergekit sparsifies nothing there; expected no {name}, or ties / "
                        "dare_linear)"
                    )
    normalize_default, rescale_default = _MK_DEFAULTS[merge_method]
    defaults = {**_SHARED, "normalize": normalize_default, "rescale": rescale_default}
    shared = {}
    for name in shared_keys:
        value = shared_given.get(name, defaults[name])
        shared[name] = _value(name, value, f"parameters.{name}", src)
    if shared.get("int8_mask"):
        raise MergelawError(
            f"{src}: parameters.int8_mask = true is not supported (a mergekit memory option for "
            "the TIES sign mask; expected false or no int8_mask)"
        )
    common: dict[str, tuple[str, float]] = {}
    for name in model_keys:
        for where, params in per_model:
            if name in params:
                key = f"{where}.parameters.{name}"
                value = params[name]
            elif name in shared_given:
                key, value = f"parameters.{name}", shared_given[name]
            elif name == "weight":
                raise MergelawError(
                    f"{src}: {where}: no weight (mergekit requires one per model or in the "
                    "top-level 'parameters')"
                )
            else:
                key, value = f"{where} ({name} by default)", 1.0
            value = _value(name, value, key, src)
            if name not in common:
                common[name] = (key, value)
            elif value != common[name][1]:
                first_key, first = common[name]
                raise MergelawError(
                    f"{src}: {key} = {value!r} differs from {first_key} = {first!r} (a sweep "
                    f"merges k-subsets with one {name} for every model; expected equal values)"
                )
    w = common["weight"][1]
    normalize = bool(shared["normalize"])
    lam = float(shared.get("lambda", 1.0))
    c = _number(lam if normalize else lam * w)
    if linear:
        if not normalize:
            raise MergelawError(
                f"{src}: parameters.normalize = false with linear (an unnormalised sum of k models "
                "is no merge onto the base; expected true)"
            )
        return method_spec("average", {"c": 1.0, "combine": "mean"}, source=src)
    density = common["density"][1]
    rescale = bool(shared["rescale"])
    if merge_method == "task_arithmetic":
        return method_spec(
            "task_arithmetic", {"c": c, "combine": "mean" if normalize else "sum"}, source=src
        )
    if merge_method == "ties":
        if rescale:
            raise MergelawError(
                f"{src}: parameters.rescale = true with ties is not supported (mergekit rescales "
                "each trimmed tensor to its L1 norm, mergelaw's TIES trim does not; expected false)"
            )
        params = {
            "c": c,
            "combine": "disjoint_mean" if normalize else "disjoint_sum",
            "density": density,
            "trim_scope": "tensor",
            "trim_min_one": True,
            "sign_method": "sum",
            "sign_tie": "positive",
            "divide_by": "count",
        }
        return method_spec("ties", params, source=src)
    p = _number(1.0 - density)
    params = {"c": c, "p": p, "rescale": "l1" if rescale else "none"}
    if merge_method == "dare_linear":
        return method_spec(
            "dare", {**params, "combine": "mean" if normalize else "sum"}, source=src
        )
    params |= {
        "combine": "disjoint_mean" if normalize else "disjoint_sum",
        "sign_method": "sum",
        "sign_tie": "positive",
        "divide_by": "count",
    }
    return method_spec("dare_ties", params, source=src)


def _value(name: str, value: Any, key: str, src: str) -> Any:
    if name in _BOOLS:
        if not isinstance(value, bool):
            raise MergelawError(f"{src}: {key} = {value!r} (expected true or false)")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MergelawError(f"{src}: {key} = {value!r} (expected a finite number)")
    value = float(value)
    if name == "weight" and value <= 0:
        raise MergelawError(f"{src}: {key} = {value!r} (expected a weight > 0)")
    if name == "density" and not 0.0 < value <= 1.0:
        raise MergelawError(
            f"{src}: {key} = {value!r} (expected 0 < density <= 1, mergekit's kept fraction)"
        )
    return value


def _number(x: float) -> float:
    """Round away float noise (1 - 0.3, 0.8 * 1.0) so recorded parameters read as written."""
    return float(f"{x:.12g}")


def _shown(value: Any) -> str:
    return "true" if value is True else "false" if value is False else repr(value)


# ----------------------------------------------------------------------------- out


def mergekit_method(spec: MethodSpec) -> tuple[str, dict[str, Any], dict[str, Any], bool]:
    """The mergekit (merge_method, top-level parameters, per-model parameters, uses base_model)
    that makes the same merge as ``spec`` with equal weights; one-line MergelawError if none."""
    where = f"method {spec.name} {spec.params_json}"

    def refuse(what: str) -> MergelawError:
        return MergelawError(f"{where}: {what} has no mergekit equivalent")

    if not spec.merge_embeddings:
        raise refuse("merge_embeddings = false (mergekit merges every tensor)")
    c = _number(spec.c)
    if spec.name in ("average", "task_arithmetic"):
        if spec.elects:
            raise refuse(f"combine = {spec.combine!r} without a trim (use ties with density 1)")
        if spec.name == "average" and spec.combine == "mean" and c == 1.0:
            return "linear", {"normalize": True}, {"weight": 1.0}, False
        shared = {"lambda": c, "normalize": spec.combine == "mean"}
        return "task_arithmetic", shared, {"weight": 1.0}, True
    if spec.sign_method != "sum":
        raise refuse(f"sign_method = {spec.sign_method!r} (mergekit's ties elects by sum)")
    if spec.sign_tie != "positive":
        raise refuse(f"sign_tie = {spec.sign_tie!r} (mergekit elects + on a tie)")
    if spec.name == "ties":
        if spec.trim_scope != "tensor":
            raise refuse(f"trim_scope = {spec.trim_scope!r} (mergekit trims per tensor)")
        if not spec.trim_min_one:
            raise refuse("trim_min_one = false (mergekit keeps at least one value per tensor)")
        if not spec.elects:
            raise refuse(f"combine = {spec.combine!r} (mergekit's ties is a disjoint merge)")
        shared = {"lambda": c, "normalize": spec.combine == "disjoint_mean", "rescale": False}
        return "ties", shared, {"weight": 1.0, "density": _number(spec.density)}, True
    if spec.rescale == "inverse_keep":
        raise refuse(
            "rescale = 'inverse_keep' (mergekit rescales each tensor to its L1 norm: rescale "
            "= 'l1')"
        )
    per_model = {"weight": 1.0, "density": _number(1.0 - spec.p)}
    if spec.name == "dare":
        if spec.elects:
            raise refuse(f"combine = {spec.combine!r} for dare (use dare_ties)")
        shared = {"lambda": c, "normalize": spec.combine == "mean", "rescale": spec.rescale == "l1"}
        return "dare_linear", shared, per_model, True
    if not spec.elects:
        raise refuse(f"combine = {spec.combine!r} (mergekit's dare_ties is a disjoint merge)")
    shared = {
        "lambda": c,
        "normalize": spec.combine == "disjoint_mean",
        "rescale": spec.rescale == "l1",
    }
    return "dare_ties", shared, per_model, True


def mergekit_config(
    method: MethodSpec,
    base: str | Path,
    experts: Sequence[str | Path],
    *,
    dtype: str = "float32",
) -> dict[str, Any]:
    """A mergekit config merging ``experts`` (checkpoint or LoRA adapter folders) onto ``base``
    with ``method`` and equal weights: the model mergelaw's merge of those experts makes.

    Paths are written absolute, so the config runs from any folder. A LoRA adapter folder
    (``adapter_config.json``) becomes mergekit's ``BASE+ADAPTER``.
    """
    if not experts:
        raise MergelawError("experts: none given (expected at least one expert to merge)")
    merge_method, shared, per_model, uses_base = mergekit_method(method)
    base_text = str(Path(base).absolute())
    models = []
    for folder in experts:
        folder = Path(folder).absolute()
        name = (
            f"{base_text}+{folder}" if (folder / "adapter_config.json").is_file() else str(folder)
        )
        models.append({"model": name, "parameters": dict(per_model)})
    config: dict[str, Any] = {"merge_method": merge_method}
    if uses_base:
        config["base_model"] = base_text
    config["models"] = models
    config["parameters"] = shared
    config["dtype"] = dtype
    return config


def choose_experts(
    pool: Sequence[str],
    k: int,
    *,
    experts: Sequence[str] | None = None,
    own: str | None = None,
    with_own: bool = True,
) -> tuple[str, ...]:
    """Which k experts of ``pool`` a planned merge takes.

    ``experts`` given: exactly those (k of them, from the pool). Otherwise the pool's first k in
    its order, with the eval domain's ``own`` expert first (``with_own``) or left out; the law
    predicts every k-subset alike apart from that membership.
    """
    pool = list(pool)
    if isinstance(k, float) and k.is_integer():
        k = int(k)  # a planning answer's k (e.g. 3.0)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(pool):
        raise MergelawError(f"k = {k!r}: expected a whole number from 1 to the pool's {len(pool)}")
    if experts is not None:
        chosen = list(experts)
        unknown = [e for e in chosen if e not in pool]
        if unknown:
            raise MergelawError(
                f"expert {unknown[0]!r} is not in the pool (expected some of: {', '.join(pool)})"
            )
        if len(set(chosen)) != len(chosen):
            raise MergelawError(f"experts {','.join(chosen)}: an expert is named twice")
        if len(chosen) != k:
            raise MergelawError(f"{len(chosen)} experts given for a merge of k = {k}")
        return tuple(chosen)
    order = [e for e in pool if e != own]
    if own is not None and own in pool:
        if with_own:
            order.insert(0, own)
        elif k > len(order):
            raise MergelawError(
                f"k = {k} without the own expert {own!r}: the pool has only {len(order)} others"
            )
    return tuple(order[:k])


def planned_mergekit_config(
    sweep: SweepSpec,
    method: str,
    method_params: str | Mapping[str, Any],
    k: int,
    *,
    experts: Sequence[str] | None = None,
    own: str | None = None,
    with_own: bool = True,
    dtype: str = "float32",
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The mergekit config of a planning answer: k experts of a sweep's pool merged with a method.

    ``sweep`` is a ``SweepSpec`` (the pool's base and folders); ``method`` and ``method_params``
    are a curves table's / fit family's columns. Returns the config and the chosen expert ids.
    """
    params = json.loads(method_params) if isinstance(method_params, str) else dict(method_params)
    spec = method_spec(method, params, source=f"method {method}")
    if sweep.exclude:
        raise MergelawError(
            f"{sweep.source}: exclude = {sweep.exclude!r} has no mergekit equivalent (mergekit "
            "merges every tensor)"
        )
    chosen = choose_experts(list(sweep.experts), k, experts=experts, own=own, with_own=with_own)
    config = mergekit_config(spec, sweep.base, [sweep.experts[e] for e in chosen], dtype=dtype)
    return config, chosen


def dump_mergekit_config(config: Mapping[str, Any], comment: str | None = None) -> str:
    """The config as YAML text (keys in mergekit's order), with ``comment`` lines on top."""
    import yaml

    text = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None)
    if comment:
        text = "".join(f"# {line}\n" for line in comment.splitlines()) + text
    return text


def write_mergekit_config(
    target: str | Path, config: Mapping[str, Any], *, comment: str | None = None
) -> Path:
    """Write the config as YAML to ``target`` atomically (``mergekit-yaml target OUT`` runs it)."""
    from mergelaw.io import atomic_path

    text = dump_mergekit_config(config, comment)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def emit_mergekit(
    target: str | Path,
    sweep: SweepSpec | str | Path,
    method: str,
    method_params: str | Mapping[str, Any],
    k: int,
    *,
    experts: Sequence[str] | None = None,
    own: str | None = None,
    with_own: bool = True,
    note: str | None = None,
    dtype: str = "float32",
) -> tuple[str, ...]:
    """Write a planning answer ("merge k experts of this sweep's pool with this method") as a
    mergekit config at ``target``; return the chosen expert ids.

    ``sweep`` is a sweep file (native or mergekit) or a read ``SweepSpec``; the config's comment
    header names the method, the experts and ``note`` (e.g. the plan's answer and its fit).
    """
    from mergelaw import __version__
    from mergelaw.measure.sweep import read_sweep

    spec = read_sweep(sweep) if isinstance(sweep, str | Path) else sweep
    config, chosen = planned_mergekit_config(
        spec, method, method_params, k, experts=experts, own=own, with_own=with_own, dtype=dtype
    )
    params = method_params if isinstance(method_params, str) else json.dumps(dict(method_params))
    lines = [
        f"Written by mergelaw {__version__}: {method} {params} of k = {len(chosen)} experts "
        f"({', '.join(chosen)}) from {spec.source}.",
        "Run: mergekit-yaml THIS_FILE OUT_DIR (DARE drops are random: mergekit's --random-seed).",
    ]
    if note:
        lines.extend(note.splitlines())
    write_mergekit_config(target, config, comment="\n".join(lines))
    return chosen
