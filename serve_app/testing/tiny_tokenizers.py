"""Tokenizers for the tiny offline pipelines, built in memory: nothing is fetched from a hub."""

from __future__ import annotations

TINY_MODEL_SEED = 0


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, as CLIP's byte-level BPE uses it."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes), strict=True))


def byte_level_vocab() -> dict[str, int]:
    """A CLIP BPE vocabulary with no merges: every byte, its end-of-word form, and the specials.

    Without merges the tokenizer falls back to single byte-level characters, which is all a model
    with random weights needs; it avoids shipping or fetching the real 49k-entry vocabulary.
    """
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}
