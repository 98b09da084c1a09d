"""A small real BPE tokenizer with byte fallback and Gemma 4's special tokens at small ids.

The corpus is generated here from fixed word lists and a seeded RNG, so the tokenizer is reproducible
without downloads. Characters outside the learned alphabet (CJK, emoji) fall back to `<0xNN>` byte
tokens, so one character spans several tokens, as it does for rare characters in the real vocabulary.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

VOCAB_SIZE = 512
SPACE_MARK = "\u2581"  # SentencePiece-style visible space, as in the Gemma vocabulary

# Gemma 4's special tokens at their real strings; pad/eos/bos/unk/mask keep their real ids 0-4 and the
# rest follow in the real relative order.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<eos>", "<bos>", "<unk>", "<mask>",
    "<|tool>", "<tool|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>",
    '<|"|>', "<|think|>", "<|channel>", "<channel|>", "<|turn>", "<turn|>",
    "<|image>", "<image|>", "<|audio>", "<audio|>", "<|image|>", "<|audio|>", "<|video|>",
)
TOKEN_IDS: dict[str, int] = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
BYTE_TOKENS: tuple[str, ...] = tuple(f"<0x{value:02X}>" for value in range(256))
FIRST_BYTE_ID = len(SPECIAL_TOKENS)
FIRST_LEARNED_ID = FIRST_BYTE_ID + len(BYTE_TOKENS)

# The characters that get their own token (printable ASCII and a few accented letters); everything else,
# CJK and emoji included, is spelled with byte tokens.
_ALPHABET = tuple(chr(code) for code in range(33, 127)) + (SPACE_MARK, "\n") + tuple("éèàçüöñß")

_WORDS = (
    "the a an and or but if then else of to in on at by for with from about into over under after before "
    "is are was were be been being have has had do does did can could will would should may might must "
    "I you he she it we they me him her us them my your his its our their this that these those what which "
    "who whom whose where when why how all any both each few more most other some such no not only own same "
    "so than too very just now here there again once model user system tool image audio video picture "
    "describe explain write read answer question think step reason because result value number list table "
    "weather city paris london tokyo temperature today tomorrow sunny rain cloud wind cold warm hot degrees "
    "cat dog bird tree house car road river mountain sea sky light dark red green blue yellow black white "
    "small large tiny big long short new old good bad first last next little great high low right left "
    "time day year week hour minute second people world life hand part place case point group problem fact "
    "function call return print import class def self true false none null string integer float array "
    "please thanks hello goodbye yes sure okay sorry help find show tell give make take look come go see"
).split()
_ACCENTED = ("café", "naïve", "résumé", "über", "Straße", "niño", "déjà", "vu", "façade", "crème", "brûlée",
             "élève", "señor", "Ærø", "smörgåsbord")
_FOREIGN = ("日本語", "こんにちは", "你好世界", "中文", "한국어", "Привет", "мир", "γειά", "σου", "مرحبا")
_EMOJI = ("😀", "🎉", "🚀", "❤️", "👍🏽", "🌧️", "☀️", "🐱")
_CODE = ("def f(x):\n    return x + 1\n", "print('hi')\n", "for i in range(10):\n    total += i\n",
         "{\"city\": \"Paris\", \"days\": 3}", "x = [1, 2, 3]\n", "if a == b:\n    pass\n")
_PUNCT = (".", ",", "?", "!", ":", ";", " -", "...")


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
    if rng.random() < 0.25:
        words.insert(rng.randrange(len(words) + 1), rng.choice(_ACCENTED))
    if rng.random() < 0.1:
        words.insert(rng.randrange(len(words) + 1), rng.choice(_FOREIGN))
    if rng.random() < 0.1:
        words.append(rng.choice(_EMOJI))
    if rng.random() < 0.2:
        words.insert(rng.randrange(len(words) + 1), str(rng.randint(0, 2026)))
    text = " ".join(words)
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    return text + rng.choice(_PUNCT)


def make_corpus(seed: int, lines: int = 3000) -> list[str]:
    """Chat-like lines, with a little code, accents, CJK and emoji."""
    rng = random.Random(seed)
    corpus = []
    for _ in range(lines):
        roll = rng.random()
        if roll < 0.08:
            corpus.append(rng.choice(_CODE))
        elif roll < 0.2:
            corpus.append(_sentence(rng) + "\n\n" + _sentence(rng))
        else:
            corpus.append(_sentence(rng) + ("\n" if rng.random() < 0.5 else " ") + _sentence(rng))
    return corpus


def _pipeline(tokenizer: Tokenizer) -> None:
    tokenizer.normalizer = normalizers.Replace(" ", SPACE_MARK)
    # Words keep their leading space mark; runs of newlines stand alone so merges never glue them to words.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(SPACE_MARK, behavior="merged_with_next"),
        pre_tokenizers.Split(Regex("\n+"), behavior="isolated"),
    ])
    tokenizer.decoder = decoders.Sequence([decoders.Replace(SPACE_MARK, " "), decoders.ByteFallback(),
                                           decoders.Fuse()])


def _train_pieces(corpus: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The learned pieces (alphabet first, then merges in order) and the merge rules."""
    learned = VOCAB_SIZE - FIRST_LEARNED_ID
    scratch = Tokenizer(models.BPE(unk_token="<unk>"))
    _pipeline(scratch)
    trainer = trainers.BpeTrainer(vocab_size=learned, initial_alphabet=list(_ALPHABET),
                                  limit_alphabet=len(_ALPHABET), show_progress=False, special_tokens=[])
    scratch.train_from_iterator(corpus, trainer=trainer)
    spec = json.loads(scratch.to_str())["model"]
    pieces = [piece for piece, _ in sorted(spec["vocab"].items(), key=lambda item: item[1])]
    merges = [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ")) for pair in spec["merges"]]
    stray = sorted(set("".join(pieces)) - set(_ALPHABET))
    if stray:
        raise RuntimeError(f"characters outside the chosen alphabet were learned: {stray}")
    if len(pieces) != learned:
        raise RuntimeError(f"the corpus yields {len(pieces)} learned pieces, expected {learned}")
    return pieces, merges


def build_tokenizer(seed: int) -> Tokenizer:
    pieces, merges = _train_pieces(make_corpus(seed))
    vocab = {token: index for index, token in enumerate((*SPECIAL_TOKENS, *BYTE_TOKENS, *pieces))}
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"vocabulary has {len(vocab)} distinct entries, expected {VOCAB_SIZE}")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                                     byte_fallback=True))
    _pipeline(tokenizer)
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    for token, index in TOKEN_IDS.items():
        if tokenizer.token_to_id(token) != index:
            raise RuntimeError(f"{token} landed on id {tokenizer.token_to_id(token)}, expected {index}")
    return tokenizer


def tokenizer_config() -> dict:
    """`tokenizer_config.json`: the template emits `<bos>`, so the tokenizer adds nothing by itself."""
    return {
        "tokenizer_class": "GemmaTokenizer",
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
        "padding_side": "left",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000,
        # The names the Hugging Face processor looks up for the media markers.
        "extra_special_tokens": {
            "image_token": "<|image|>",
            "boi_token": "<|image>",
            "eoi_token": "<image|>",
            "audio_token": "<|audio|>",
            "boa_token": "<|audio>",
            "eoa_token": "<audio|>",
        },
    }


def write_tokenizer(tokenizer: Tokenizer, folder: Path) -> None:
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")


def ordinary_ids() -> list[int]:
    """Ids a random prompt may use: every byte and learned piece, no special or media token."""
    return list(range(FIRST_BYTE_ID, VOCAB_SIZE))
