"""An offline stand-in for the Vicuna (Llama-2 SentencePiece) tokenizer of llava-hf/llava-v1.6-vicuna-7b-hf.

Only prompt LENGTH matters to timing and memory. This tokenizer splits the chat template and the
default question into exactly the pieces, with the ids, that the real tokenizer produces
(`legacy=False`, checked against the real tokenizer.model):
    <s> ▁US ER : ▁ <image> <0x0A> What ▁is ▁shown ▁in ▁this ▁image ? ▁A SS IST ANT :   (19 tokens)
Other words become one `<unk>` token each (most English words are one Llama token too), so a
custom prompt's length is close to, not exactly, the real one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers loads in seconds: only a tokenizer that is built needs it, never --help
    from transformers import PreTrainedTokenizerFast

# piece -> real Llama-2 id; "##" marks a piece that continues a word (WordPiece notation)
LLAMA_PIECES = {
    "<unk>": 0,
    "<s>": 1,
    "</s>": 2,
    "\n": 13,
    " ": 29871,
    ":": 29901,
    "?": 29973,
    ".": 29889,
    ",": 29892,
    "US": 3148,
    "##ER": 1001,
    "A": 319,
    "##SS": 1799,
    "##IST": 9047,
    "##ANT": 13566,
    "What": 5618,
    "is": 338,
    "shown": 4318,
    "in": 297,
    "this": 445,
    "image": 1967,
}


def offline_tokenizer(config) -> PreTrainedTokenizerFast:
    """A tokenizer needing no download, with the model's image token id for `<image>`."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = dict(LLAMA_PIECES)
    vocab["<image>"] = config.image_token_id
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=100))
    # Drop spaces between words (SentencePiece folds them into the next piece); a space that ends a
    # text segment, as before "<image>", stays a piece of its own, as "▁" does in Llama's tokenizer.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[ \t]+(?!$)"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"\w+|[^\w\s]|\s"), behavior="isolated"),
        ]
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_special_tokens(["<image>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )


@dataclass(frozen=True)
class ChatFormat:
    """A model's chat template, as its real tokenizer splits it around the question."""

    template: str  # with "<image>" and "{prompt}"
    before: tuple[int, ...]  # ids up to the question (BOS and the image token included)
    after: tuple[int, ...]  # ids after the question
    words: dict[str, int]  # the default question's pieces, with the real ids
    unk: int = 0


class ChatTokenizer:
    """An offline stand-in for tokenizers whose legacy SentencePiece adds a piece after special tokens
    (Mistral, Yi, LLaVA-1.5's Vicuna): the template's ids exact, the default question's pieces exact,
    any other word or punctuation mark one token (a close, not exact, length)."""

    def __init__(self, chat: ChatFormat):
        self.chat = chat
        self.prefix, self.suffix = chat.template.split("{prompt}")

    def __call__(self, text: str) -> dict:
        if not (text.startswith(self.prefix) and text.endswith(self.suffix)):
            raise ValueError(f"not this model's chat template: {text!r}")
        question = text[len(self.prefix) : len(text) - len(self.suffix)]
        pieces = re.findall(r"\w+|[^\w\s]", question)
        ids = [*self.chat.before, *(self.chat.words.get(p, self.chat.unk) for p in pieces), *self.chat.after]
        return {"input_ids": ids}
