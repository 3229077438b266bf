"""Hugging Face model folders on the output side: config, tokenizer, model card, vocabulary rows.

Nothing here imports transformers at module level: copying a config or tokenizer files
works with the standard library alone, and the parts that need ``transformers`` or
``tokenizers`` (a tokenizer union, reading a SentencePiece-only tokenizer) import them
where used and name the ``hf`` extra when they are missing.
"""
