"""`make demo`'s fill-mask examples are held-out text: the model fills them from context."""

import os

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


def _always_predicts(hf_dir, token: int, vocab: int = 16) -> None:
    """A tiny random BertForMaskedLM whose output bias makes `token` every position's argmax."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(
        transformers.BertConfig(vocab_size=vocab, hidden_size=8, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=16,
                                max_position_embeddings=16))
    with torch.no_grad():
        model.cls.predictions.bias.zero_()
        model.cls.predictions.bias[token] = 100.0
    model.save_pretrained(str(hf_dir))


def test_accuracy_by_input_splits_mask_from_kept_and_random_slots(tmp_path):
    """Predictions are always 7. Mask slots (input 3): labels 7, 5, 5 → 1/3 right, commonest
    label 5 → baseline 2/3. Other slots: kept 7 (right), random 5 for label 8 (wrong), kept 7
    (right) → 2/3. Slots of weight 0 (which would be right) count nowhere."""
    import numpy as np

    _always_predicts(tmp_path, token=7)
    mask_id = 3
    batch = {
        "input_ids": np.array([[1, 3, 5, 3, 7, 0, 0, 0], [1, 3, 7, 0, 0, 0, 0, 0]]),
        "attention_mask": np.array([[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0]]),
        "masked_positions": np.array([[1, 3, 4, 2], [1, 2, 0, 0]]),
        "masked_labels": np.array([[7, 5, 7, 8], [5, 7, 7, 7]]),
        "masked_weights": np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.float32),
    }
    split = demo.accuracy_by_input(str(tmp_path), [batch], mask_id)
    assert split == {
        "mask_accuracy": 1 / 3,
        "mask_baseline": 2 / 3,
        "mask_slots": 3,
        "other_accuracy": 2 / 3,
        "other_slots": 3
    }


def test_pos_examples_are_isdt_sentences_outside_the_shipped_splits():
    examples = demo.pos_examples()
    assert len(examples) == 2
    shipped = "".join(
        _lines(os.path.join(demo.REPO, "data", "it", "ud", f"{name}.conllu"))
        for name in ("train", "dev", "test"))
    ids = [
        line for line in _lines(demo.POS_EXAMPLES).splitlines() if line.startswith("# sent_id = ")
    ]
    assert len(ids) == 2 and not any(i + "\n" in shipped for i in ids)
    for words, tags in examples:
        # One UD word a pipeline word (the demo joins them by spaces), one UPOS tag each.
        assert len(words) == len(tags) >= 5 and all(t.isupper() for t in tags)
        assert not any(" " in w for w in words)
