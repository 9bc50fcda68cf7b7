"""gmai-eval: score vision-language models on GMAI-MMBench-style multiple-choice TSVs.

Modules: ``data`` (streaming TSV reader), ``prompt`` (VLMEvalKit-compatible prompts),
``extract`` (answer extraction), ``adapters`` / ``hf_adapter`` / ``openai_adapter`` (models),
``runner`` (resumable, sharded prediction), ``scoring`` (accuracies, CIs, tables, plots),
``cli`` (the ``gmai-eval`` command).
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
