"""Shipping a measured recipe: the export bundle, its check, and a CI gate.

Map of this package:

    bundle.py      the bundle's files, bundle.json's figures (schema version 1), reading a bundle, zipping one
    sources.py     a bundle's row: a sweep job's stored row, or a recipe measured now the way a sweep measures it
    report.py      report.html: self-contained, Plotly embedded
    card.py        MODEL_CARD.md: a Hugging Face model card
    history.py     every bundle recorded in the workspace (engine.workspace), and written again from there
    verify.py      `quantscope verify`: sha256 and metric again, in a fresh process (reevaluate.py)
    gate.py        `quantscope gate`: pass or fail a recipe against limits; latency timed interleaved with fp32
    cli.py         the commands, added to engine.cli
"""
