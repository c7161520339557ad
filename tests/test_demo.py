"""`make demo`'s fill-mask examples are held-out text: the model fills them from context."""

from flaxlm import demo


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_fill_mask_examples_come_from_the_held_out_documents_only():
    train_text = _lines(demo.EVAL_TEXT.replace("eval.txt", "train.txt"))
    eval_text = _lines(demo.EVAL_TEXT)
    assert len(demo.FILL_MASK_EXAMPLES) >= 3
    for sentence, word in demo.FILL_MASK_EXAMPLES:
        assert sentence.count("<mask>") == 1, sentence
        original = sentence.replace("<mask>", word)
        assert original in eval_text, f"not a held-out sentence: {original!r}"
        # The sentence with its word and its context without the word are both unseen.
        assert original not in train_text, f"also in the training text: {original!r}"
        for side in sentence.split("<mask>"):
            if len(side.strip()) > 20:
                assert side.strip() not in train_text, f"context seen in training: {side!r}"
    assert demo.FILL_MASK_SENTENCES == [s for s, _ in demo.FILL_MASK_EXAMPLES]
