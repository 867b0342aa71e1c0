"""Measurement: merge experts onto a base and measure held-out cross-entropy (needs torch).

Install with ``pip install 'mergelaw[measure]'``. Modules, one job each:

- ``methods``   a merge method's spec from the registry (``mergelaw.merge_methods``, where each
                method is declared once): parameters, defaults, canonical JSON (no torch)
- ``merge``     the merge engine, sparsify -> consensus -> combine, as pure tensor functions
- ``streaming`` merge one subset tensor by tensor, reading base and experts as it goes
- ``experts``   load base + experts, check they are mergeable, give task vectors tensor by tensor
- ``checkpoints`` which file of a Hugging Face checkpoint folder holds which tensor
- ``tensorfile`` per-tensor reads from a safetensors file
- ``lora``      PEFT LoRA adapters as experts (the task vector from the low-rank factors)
- ``mergekit_config`` mergekit YAML in (as a sweep) and out (a planned merge)
- ``samplers``  seeded subset samplers (no torch)
- ``evaluate``  held-out text -> token windows (cached) -> token-mean cross-entropy
- ``work``      the unit of work: one base, a batch of subsets, one method -> curves rows
- ``executors`` map units of work: here, one after another
- ``ray_executor`` map units of work over a Ray cluster (extra ``ray``; imports Ray lazily)
- ``store``     resumable row store: one atomic part file per finished unit
- ``sweep``     the declarative sweep file and the runner that ties it all together
- ``device``    checks before measuring (the extra installed, the device there) and torch's threads
- ``lab``       corpora, tokenizer, bases and experts, and the lab pipeline; see its ``__init__``

The ``mergelaw measure`` and ``mergelaw lab`` commands are in ``mergelaw.cli.measure``.
This ``__init__`` imports nothing, so ``import mergelaw.measure`` works without torch.
"""
