"""Vocabulary pruning: exactness on kept tokens, unchanged tokenization, uncasing, re-indexing."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from tests.vocab.conftest import IT_CORPUS


def _sources(run: str) -> list[list[int]]:
    with open(os.path.join(run, "pruned_ids.json"), encoding="utf-8") as f:
        return json.load(f)["sources"]


def _paragraphs(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _covered(old_tok, new_of_old: dict[int, int], paragraphs: list[str]):
    """(paragraph, old ids) of the paragraphs whose original tokenization uses only kept ids."""
    encoded = old_tok.encode_batch(paragraphs)
    return [(p, ids) for p, (ids, _) in zip(paragraphs, encoded) if all(
        int(i) in new_of_old for i in ids)]


def _forward(run: str, ids_BxL: np.ndarray):
    """(hidden states, logits at every position) of a workdir's model, fp32."""
    from tests.convert.conftest import load_flax

    import jax

    _, _, model = load_flax(run)
    mask = (ids_BxL != 1).astype(np.int32)

    @jax.jit  # one compilation instead of op-by-op dispatch
    def forward(ids_BxL, mask_BxL):
        hidden = model.encoder(ids_BxL, mask_BxL, jax.numpy.zeros_like(ids_BxL))
        return hidden, model.head_logits(hidden)

    hidden, logits = forward(ids_BxL, mask)
    return np.asarray(hidden), np.asarray(logits), mask


def _batch(rows: list[np.ndarray], cls: int, sep: int, pad: int, length: int = 32) -> np.ndarray:
    ids = np.full((len(rows), length), pad, np.int32)
    for r, row in enumerate(rows):
        row = [cls, *row[:length - 2], sep]
        ids[r, :len(row)] = row
    return ids


def test_pruned_model_computes_the_original_function_on_kept_tokens(xlmr_workdir, pruned_cased):
    """On the Italian corpus, every paragraph the original tokenizer cuts into kept pieces only is
    cut the same way by the pruned tokenizer, and the pruned model's hidden states and MLM logits
    over the kept tokens equal the original's."""
    from flaxlm.data.tokenizers import load_tokenizer

    old_tok = load_tokenizer(os.path.join(xlmr_workdir, "tokenizer"))
    new_tok = load_tokenizer(os.path.join(pruned_cased, "tokenizer"))
    sources = _sources(pruned_cased)
    assert all(len(s) == 1 for s in sources)  # no uncasing: nothing merged
    old_of_new = np.array([s[0] for s in sources])
    new_of_old = {old: new for new, old in enumerate(old_of_new)}
    assert new_tok.vocab_size == len(sources) < old_tok.vocab_size * 0.9

    paragraphs = _paragraphs(IT_CORPUS)
    covered = _covered(old_tok, new_of_old, paragraphs)
    assert 1000 < len(covered) < len(paragraphs)  # a real test: many covered, some not
    new_ids = new_tok.encode_batch([p for p, _ in covered])
    for (text, old), (new, _) in zip(covered, new_ids):
        assert new.tolist() == [new_of_old[int(i)] for i in old], text

    rows = [ids for _, ids in covered if len(ids) > 8][:4]
    old_BxL = _batch(rows, old_tok.cls_id, old_tok.sep_id, old_tok.pad_id)
    new_BxL = np.vectorize(lambda i: new_of_old[int(i)])(old_BxL).astype(np.int32)
    old_h, old_logits, mask = _forward(xlmr_workdir, old_BxL)
    new_h, new_logits, _ = _forward(pruned_cased, new_BxL)
    real = mask.astype(bool)
    assert np.abs(old_h[real]).mean() > 0.1
    np.testing.assert_allclose(new_h[real], old_h[real], rtol=0, atol=1e-5)
    np.testing.assert_allclose(new_logits[real], old_logits[real][:, old_of_new], rtol=0, atol=1e-5)


def test_uncased_tokenizer_lowercases_alike_in_flaxlm_and_transformers(
        xlmr_workdir, pruned_uncased):
    from flaxlm.convert.tokenizer_files import load_hf_tokenizer
    from flaxlm.data.tokenizers import load_tokenizer
    from tests.vocab.conftest import ES_CORPUS

    tok_dir = os.path.join(pruned_uncased, "tokenizer")
    tok, hf_tok = load_tokenizer(tok_dir), load_hf_tokenizer(tok_dir)
    texts = _paragraphs(IT_CORPUS)[:300:3] + _paragraphs(ES_CORPUS)[:300:3]
    texts += [t.upper() for t in texts[:20]] + ["ROMA È la Capitale d'ITALIA, Città ΣΟΦΌΣ"]
    ours = [ids.tolist() for ids, _ in tok.encode_batch(texts)]
    assert ours == hf_tok(texts, add_special_tokens=False)["input_ids"]
    for text in texts[-21:]:
        assert tok.encode_batch([text])[0][0].tolist() == tok.encode_batch([text.lower()
                                                                            ])[0][0].tolist(), text
    pieces = hf_tok.convert_ids_to_tokens(range(tok.vocab_size))
    words = [p for p in pieces if p not in hf_tok.all_special_tokens]
    assert all(p == p.lower() for p in words) and len(set(pieces)) == len(pieces)

    # A kept lowercase piece keeps its own row: lowercase text over such pieces is exact.
    old_tok = load_tokenizer(os.path.join(xlmr_workdir, "tokenizer"))
    sources = _sources(pruned_uncased)
    assert any(len(s) > 1 for s in sources)  # case variants were merged
    new_of_old = {s[0]: j for j, s in enumerate(sources)}
    covered = [ids for _, ids in _covered(old_tok, new_of_old, [t.lower() for t in texts[:100]])]
    rows = [ids for ids in covered if len(ids) > 8][:3]
    old_BxL = _batch(rows, old_tok.cls_id, old_tok.sep_id, old_tok.pad_id)
    new_BxL = np.vectorize(lambda i: new_of_old[int(i)])(old_BxL).astype(np.int32)
    old_h, _, mask = _forward(xlmr_workdir, old_BxL)
    new_h, _, _ = _forward(pruned_uncased, new_BxL)
    np.testing.assert_allclose(new_h[mask == 1], old_h[mask == 1], rtol=0, atol=1e-5)


def test_reindex_moves_embedding_rows_and_mlm_bias_to_the_kept_ids():
    """Row j comes from old id sources[j][0] in every vocab-axis tensor (the MLM bias too, not a
    resize by position); merged case variants take the lowercase row or the frequency-weighted
    average."""
    from flaxlm.models.config import preset
    from flaxlm.vocab.reindex import mixing_weights, reindex, vocab_axes
    from flaxlm.vocab.selection import Plan

    axes = vocab_axes(preset("tiny", vocab_size=6), "mlm")
    assert axes == {"encoder/embeddings/word/embedding": 0, "mlm_head/bias": 0}
    rng = np.random.default_rng(0)
    flat = {
        "encoder/embeddings/word/embedding": rng.normal(size=(6, 3)).astype(np.float32),
        "mlm_head/bias": rng.normal(size=6).astype(np.float32),
        "encoder/embeddings/norm/scale": np.ones(3, np.float32)
    }
    # new 0 ← 0; new 1 ← 4 ("▁casa", exact) merged with 2 ("▁Casa"); new 2 ← 5 ("▁roma",
    # from "▁Roma", no lowercase piece) merged with 3 ("▁ROMA")
    plan = Plan(("<s>", "▁casa", "▁roma"), ((0, ), (4, 2), (5, 3)), (True, True, False), {})
    tokens_V = np.array([0, 0, 30, 10, 10, 30])
    for rows in ("lowercase", "average"):
        new = reindex(flat, axes, plan, mixing_weights(plan, tokens_V, rows))
        for name in axes:
            old = flat[name]
            np.testing.assert_array_equal(new[name][0], old[0])
            expected_casa = old[4] if rows == "lowercase" else 0.25 * old[4] + 0.75 * old[2]
            np.testing.assert_allclose(new[name][1], expected_casa, rtol=1e-6)
            np.testing.assert_allclose(new[name][2], 0.75 * old[5] + 0.25 * old[3], rtol=1e-6)
        assert new["encoder/embeddings/norm/scale"] is flat["encoder/embeddings/norm/scale"]


def test_sharded_counts_merge_to_the_whole_corpus_count(xlmr_workdir, tmp_path):
    from flaxlm.data.tokenizers import load_tokenizer
    from flaxlm.errors import FlaxlmError
    from flaxlm.vocab import doc_freq, sentencepiece_prune
    from tests.conftest import IT_EVAL

    tok = load_tokenizer(os.path.join(xlmr_workdir, "tokenizer"))
    vocab = sentencepiece_prune.read_vocabulary(tok.path, tok.vocab_size)
    whole = doc_freq.count([IT_EVAL], tok, vocab)
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"counts-{i}.npz"))
        doc_freq.count([IT_EVAL], tok, vocab, shard=(i, 3)).save(paths[-1])
    merged = doc_freq.merge([doc_freq.load(p) for p in paths], paths, vocab)
    assert merged.num_docs == whole.num_docs == 21
    for field in ("docs_V", "docs_uncased_V", "tokens_V"):
        np.testing.assert_array_equal(getattr(merged, field), getattr(whole, field))
    assert merged.chars == whole.chars
    assert (whole.docs_V <= whole.num_docs).all() and whole.docs_V.max() == whole.num_docs
    assert (whole.docs_uncased_V >= 0).all() and whole.docs_uncased_V.sum() < whole.docs_V.sum()
    other = dataclasses.replace(whole, fingerprint="0" * 64)
    with pytest.raises(FlaxlmError, match="another tokenizer"):
        doc_freq.merge([other], ["x.npz"], vocab)


def test_bad_input_is_one_line_and_writes_nothing(xlmr_workdir, pruned_cased, tmp_path, capsys):
    import shutil

    from flaxlm.cli import main
    from tests.conftest import IT_EVAL

    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(xlmr_workdir, no_tokenizer)
    shutil.rmtree(no_tokenizer / "tokenizer")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n", encoding="utf-8")
    unknown_script = tmp_path / "zh.txt"
    unknown_script.write_text("中文文本\n\n日本語の文章\n", encoding="utf-8")
    run_files = sorted(os.listdir(pruned_cased))
    cases = [
        ([xlmr_workdir, IT_EVAL, "0"], "--min-doc-freq 0.0: a fraction"),
        ([xlmr_workdir, IT_EVAL, "1"], "--min-doc-freq 1.0: a fraction"),
        ([xlmr_workdir, str(empty), "0.001"], "no text found"),
        ([str(no_tokenizer), IT_EVAL, "0.001"], "has no tokenizer"),
        ([xlmr_workdir, str(unknown_script), "0.001"], "no token besides the special ones"),
    ]
    for (model, corpus, threshold), message in cases:
        before = sorted(os.listdir(tmp_path))
        code = main([
            "prune-vocab", "--model", model, "--corpus", corpus, "--min-doc-freq", threshold,
            "--out",
            str(tmp_path / "out")
        ])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("flaxlm: error: ") and message in err, err
        assert "\n" not in err and sorted(os.listdir(tmp_path)) == before
    code = main(
        ["prune-vocab", "--model", xlmr_workdir, "--corpus", IT_EVAL, "--out", pruned_cased])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "already holds a run" in err and "\n" not in err
    assert sorted(os.listdir(pruned_cased)) == run_files


@pytest.mark.slow
def test_wordpiece_pruning_keeps_covered_tokenization_and_uncases(tmp_path, it_small_corpus):
    """BERT: covered Italian text tokenizes as before; uncased, flaxlm and transformers agree and
    case no longer matters."""
    from flaxlm.convert.tokenizer_files import load_hf_tokenizer
    from flaxlm.data.tokenizers import load_tokenizer, train_tokenizer
    from flaxlm.models.config import preset
    from tests.convert.conftest import write_workdir
    from tests.vocab.conftest import prune

    tok = train_tokenizer([it_small_corpus], vocab_size=600, kind="wordpiece",
                          out_dir=str(tmp_path / "wp"))
    config = preset("tiny", arch="bert", vocab_size=tok.vocab_size, pad_token_id=tok.pad_id,
                    hidden_size=32, num_heads=2, intermediate_size=64, type_vocab_size=2,
                    max_position_embeddings=64, layer_norm_eps=1e-12)
    write_workdir(tmp_path / "bert", tok.path, config, steps=(0, ))
    paragraphs = _paragraphs(IT_CORPUS)[::10]
    for uncase in (False, True):
        run = tmp_path / f"pruned-{uncase}"
        prune(str(tmp_path / "bert"), run, uncase=uncase)
        new_tok = load_tokenizer(str(run / "tokenizer"))
        new_of_old = {s[0]: j for j, s in enumerate(_sources(str(run)))}
        assert new_tok.vocab_size < tok.vocab_size and new_tok.lowercase == uncase
        if not uncase:
            covered = _covered(tok, new_of_old, paragraphs)
            assert 100 < len(covered) < len(paragraphs)
            new_ids = new_tok.encode_batch([p for p, _ in covered])
            for (text, old), (new, _) in zip(covered, new_ids):
                assert new.tolist() == [new_of_old[int(i)] for i in old], text
        else:
            hf_tok = load_hf_tokenizer(str(run / "tokenizer"))
            texts = paragraphs[:100] + [p.upper() for p in paragraphs[:10]]
            ours = [ids.tolist() for ids, _ in new_tok.encode_batch(texts)]
            assert ours == hf_tok(texts, add_special_tokens=False)["input_ids"]
            assert ours[100:] == ours[:10]


def test_counts_sharded_by_row_group_merge_to_the_whole_count(xlmr_workdir, tmp_path):
    """A Parquet corpus with more row groups than shards: each shard reads only its row groups
    (here 3 shards of 5 groups), and the shards still add up to the whole corpus."""
    from flaxlm.data import sources
    from flaxlm.data.tokenizers import load_tokenizer
    from flaxlm.vocab import doc_freq, sentencepiece_prune
    from tests.conftest import IT_EVAL
    from tests.data.test_corpus_files import write_parquet

    tok = load_tokenizer(os.path.join(xlmr_workdir, "tokenizer"))
    vocab = sentencepiece_prune.read_vocabulary(tok.path, tok.vocab_size)
    parquet = write_parquet(tmp_path / "it.parquet", list(sources.iter_documents([IT_EVAL])),
                            row_group_size=5)
    assert sources.num_units([parquet]) == 5
    whole = doc_freq.count([IT_EVAL], tok, vocab)
    shards = [doc_freq.count([parquet], tok, vocab, shard=(i, 3)) for i in range(3)]
    assert [s.num_docs for s in shards] == [5 + 5, 5 + 1, 5]  # groups 0+3, 1+4, 2
    merged = doc_freq.merge(shards, ["a", "b", "c"], vocab)
    for field in ("num_docs", "docs_V", "docs_uncased_V", "tokens_V", "chars"):
        np.testing.assert_array_equal(getattr(merged, field), getattr(whole, field))
