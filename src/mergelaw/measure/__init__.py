"""Measurement: merge experts onto a base and measure held-out cross-entropy (needs torch).

Install with ``pip install 'mergelaw[measure]'``. Modules, one job each:

- ``methods``   merge-method specs: names, parameters, defaults, canonical JSON (no torch)
- ``merge``     the merge engine, sparsify -> consensus -> combine, as pure tensor functions
- ``experts``   load base + experts, check they are mergeable, hold task vectors on the device
- ``samplers``  seeded subset samplers (no torch)
- ``evaluate``  held-out text -> token windows (cached) -> token-mean cross-entropy
- ``work``      the unit of work: one base, a batch of subsets, one method -> curves rows
- ``executors`` map units of work: here, one after another
- ``ray_executor`` map units of work over a Ray cluster (extra ``ray``; imports Ray lazily)
- ``store``     resumable row store: one atomic part file per finished unit
- ``sweep``     the declarative sweep file and the runner that ties it all together
- ``command``   the ``mergelaw measure`` command
- ``training``  pretrain a base and fine-tune experts: resumable, seeded, bf16 autocast
- ``lab``       corpora, tokenizer and the lab pipeline (``mergelaw lab``); see its ``__init__``

This ``__init__`` imports nothing, so ``import mergelaw.measure`` works without torch.
"""
