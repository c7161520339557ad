"""Re-save an ELECTRA discriminator as the identical BertModel, for the PyTorch fine-tuning loops.

With embedding size equal to hidden size an ELECTRA encoder has BERT's architecture and tensor
names (no embedding projection), so `benchmarks/runners/conll2002_torch.py`, which fine-tunes
`BertForTokenClassification` with BERT's layer-wise groups, can start from a discriminator that
flaxlm exported. The check below asserts the two give the same hidden states. With `--random
SEED` it saves a fresh BertModel of the same shape instead (transformers' own initialization):
the PyTorch side's no-pre-training arm.

  python -m benchmarks.electra_as_bert EXPORTED_ELECTRA OUT [--random SEED]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil

TOKENIZER_FILES = ("tokenizer", "special_tokens", "vocab")


def bert_config(electra_dir: str):
    from transformers import BertConfig, ElectraConfig
    ec = ElectraConfig.from_pretrained(electra_dir)
    if ec.model_type != "electra" or ec.embedding_size != ec.hidden_size:
        raise SystemExit(f"{electra_dir}: needs an ELECTRA checkpoint whose embedding_size equals "
                         f"hidden_size (model_type {ec.model_type!r}, embedding_size "
                         f"{ec.embedding_size}, hidden_size {ec.hidden_size})")
    return BertConfig(vocab_size=ec.vocab_size, hidden_size=ec.hidden_size,
                      num_hidden_layers=ec.num_hidden_layers,
                      num_attention_heads=ec.num_attention_heads,
                      intermediate_size=ec.intermediate_size,
                      max_position_embeddings=ec.max_position_embeddings,
                      type_vocab_size=ec.type_vocab_size, pad_token_id=ec.pad_token_id,
                      layer_norm_eps=ec.layer_norm_eps, hidden_act=ec.hidden_act)


def convert(electra_dir: str):
    """The discriminator's encoder as a BertModel, checked on random ids in eval mode."""
    import torch
    from transformers import BertModel, ElectraModel
    electra = ElectraModel.from_pretrained(electra_dir).eval()
    bert = BertModel(bert_config(electra_dir), add_pooling_layer=False).eval()
    missing, unexpected = bert.load_state_dict(electra.state_dict(), strict=False)
    left = [k for k in (*missing, *unexpected) if not k.endswith("position_ids")]
    if left:
        raise SystemExit(f"{electra_dir}: tensors that do not map onto BERT's names: {left}")
    ids_BxL = torch.randint(0, bert.config.vocab_size,
                            (2, min(20, bert.config.max_position_embeddings)))
    with torch.no_grad():
        diff = (electra(ids_BxL).last_hidden_state - bert(ids_BxL).last_hidden_state).abs().max()
    print(f"max |ELECTRA − BERT| hidden state: {diff.item():.3g}")
    assert diff.item() < 1e-5, diff
    return bert


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.electra_as_bert")
    parser.add_argument("electra", help="an exported ELECTRA directory (discriminator)")
    parser.add_argument("out")
    parser.add_argument("--random", type=int, default=None, metavar="SEED",
                        help="save a freshly initialized BertModel of the same shape instead")
    args = parser.parse_args()
    if args.random is None:
        model = convert(args.electra)
    else:
        import torch
        from transformers import BertModel
        torch.manual_seed(args.random)
        model = BertModel(bert_config(args.electra), add_pooling_layer=False)
    model.save_pretrained(args.out)
    for path in glob.glob(os.path.join(args.electra, "*")):
        if os.path.basename(path).startswith(TOKENIZER_FILES):
            shutil.copy(path, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
