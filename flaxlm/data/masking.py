"""In-graph masking of packed MLM rows: whole-word (or token) masking and the two-segment cut.

`MaskingRates` is the one home of the masking parameters (what fraction is chosen, how chosen
tokens are replaced, how many prediction slots a row has) and their one validation; the data
pipeline and the objectives that mask (MLM, ELECTRA, distillation) all pass it.
`make_masker` builds the tf.data function that masks a whole batch with counter-based random
numbers: masks depend only on (seed, global example index, position), never on Python state.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from flaxlm.data.tokenizer_dir import Tokenizer
from flaxlm.errors import FlaxlmError


@dataclasses.dataclass(frozen=True)
class MaskingRates:
    """What MLM masking draws; defaults are BERT's (15% of words, 80/10/10)."""

    mask_rate: float = 0.15  # fraction of words chosen for prediction
    mask_token_rate: float = 0.8  # of chosen tokens: replaced by the mask id …
    random_token_rate: float = 0.1  # … or by a random non-special token; the rest stay unchanged
    max_predictions: int = 0  # prediction slots per row; 0: derived by `budget(seq_len)`
    # False: every non-special token is its own "word" (BERT's and ELECTRA's token-level masking).
    whole_word_masking: bool = True

    def validate(self, section: str) -> None:
        """`section`: where the user sets these keys (`DataConfig`, `objective.mlm`, ...)."""
        if self.max_predictions < 0:
            raise FlaxlmError(f"{section}.max_predictions={self.max_predictions}: must be ≥ 0")
        if not 0 < self.mask_rate < 1:
            raise FlaxlmError(f"{section}.mask_rate must be in (0, 1), got {self.mask_rate}")
        rates = (self.mask_token_rate, self.random_token_rate)
        if min(rates) < 0 or sum(rates) > 1:
            raise FlaxlmError(f"{section}.mask_token_rate={rates[0]} and {section}."
                              f"random_token_rate={rates[1]} must be ≥ 0 with a sum ≤ 1")

    def budget(self, seq_len: int) -> int:
        """M, the fixed number of prediction slots: `max_predictions`, or the expected number of
        masked tokens plus 20% and 8 tokens of headroom for long words, rounded up to a multiple
        of 8."""
        if self.max_predictions:
            return self.max_predictions
        headroom = self.mask_rate * seq_len * 1.2 + 8
        return min(seq_len, 8 * math.ceil(headroom / 8))


def make_masker(
    rates: MaskingRates,
    tokenizer: Tokenizer,
    seed: int,
    *,
    seq_len: int,
    two_segment_rate: float,
) -> Callable[..., dict[str, tf.Tensor]]:
    """`mask(g_B, ids_BxL, word_starts_BxL) -> features` for a batch of packed examples with global
    indices g_B; every feature has the leading batch dimension B.

    Whole-word masking: k = max(1, round(mask_rate · words)) words are drawn by random scores and
    taken in score order while their tokens fit in M (two greedy passes, so one long word does not
    end the draw); every sub-token of a taken word is a prediction. With
    `rates.whole_word_masking=False` every token starts a word: k = max(1, round(mask_rate ·
    maskable tokens)) distinct tokens, at most M.
    Each prediction independently becomes the mask id / a random non-special token / itself.
    Special tokens and padding are never in a word, hence never masked.

    Two segments (`two_segment_rate` of the rows, drawn per example): a [SEP] is put in at the
    first word start from the middle of the row's text on, the rest moves one position right
    (a full row loses its last text token), and everything after that [SEP] up to the final one
    gets token type 1, so pair fine-tuning starts from a trained type-1 embedding. This follows
    google-research/electra build_pretraining_dataset.py (at 8a46635): 10% of examples keep one
    segment (lines 59-61), the first segment fills about half the length (lines 63-79, there at a
    sentence boundary, here at a word boundary: packed rows keep no sentence ends), token type 1
    for the second segment and its [SEP] (lines 100-104). BERT's create_pretraining_data.py
    (at eedf571, lines 258-319) always makes two segments, its second one from another document
    half of the time for next-sentence prediction, which flaxlm does not train.
    The whole batch is masked by one set of ops (per-example maps cost ~30 op launches per row),
    and every random number is a hash of (seed, g, stream, position): a row's mask does not
    depend on which batch or host it lands in.
    """
    if not 0 <= two_segment_rate <= 1:
        raise FlaxlmError(f"two_segment_rate={two_segment_rate}: must be in [0, 1]")
    budget = rates.budget(seq_len)
    specials_S = tf.constant(tokenizer.special_ids, tf.int32)
    non_special_R = tf.constant(
        np.setdiff1d(np.arange(tokenizer.vocab_size), tokenizer.special_ids), tf.int32)
    word_stream, action_stream, token_stream, segment_stream = (_stream_key(seed, s)
                                                                for s in range(4))

    def mask(g_B, ids_BxL, word_starts_BxL):
        g_B = tf.cast(g_B, tf.int64)
        if two_segment_rate > 0:
            drawn_B = _uniform(segment_stream, g_B, 1)[:, 0] < two_segment_rate
            ids_BxL, word_starts_BxL, types_BxL = _two_segments(drawn_B, ids_BxL, word_starts_BxL,
                                                                tokenizer, seq_len)
        else:
            types_BxL = tf.zeros_like(ids_BxL)
        if not rates.whole_word_masking:  # after the cut, which stays at a word start
            word_starts_BxL = tf.ones_like(word_starts_BxL)
        maskable_BxL = ~tf.reduce_any(ids_BxL[:, :, None] == specials_S, axis=2)
        chosen_BxL = _choose_words(_uniform(word_stream, g_B, seq_len), word_starts_BxL,
                                   maskable_BxL, rates.mask_rate, budget, seq_len)
        positions_BxM, used_BxM = _prediction_slots(chosen_BxL, budget, seq_len)
        action_BxL = _uniform(action_stream, g_B, seq_len)
        random_ids_BxL = tf.gather(non_special_R,
                                   _below(token_stream, g_B, seq_len, non_special_R.shape[0]))
        replaced_BxL = tf.where(
            action_BxL < rates.mask_token_rate,
            tokenizer.mask_id,
            tf.where(action_BxL < rates.mask_token_rate + rates.random_token_rate, random_ids_BxL,
                     ids_BxL),
        )
        return {
            "input_ids": tf.where(chosen_BxL, replaced_BxL, ids_BxL),
            "attention_mask": tf.cast(ids_BxL != tokenizer.pad_id, tf.int32),
            "token_type_ids": types_BxL,
            "masked_positions": positions_BxM,
            "masked_labels": tf.where(used_BxM, tf.gather(ids_BxL, positions_BxM, batch_dims=1), 0),
            "masked_weights": tf.cast(used_BxM, tf.float32),
        }

    return mask


def _two_segments(drawn_B, ids_BxL, word_starts_BxL, tokenizer: Tokenizer, seq_len: int):
    """(ids, word starts, token types) with the second segment cut off in the `drawn_B` rows."""
    slot_W = tf.range(seq_len)
    real_B = tf.reduce_sum(tf.cast(ids_BxL != tokenizer.pad_id, tf.int32), axis=1)
    pos_1xL = slot_W[None, :]
    # The first word start at or after the middle of the text (positions 1 … real-2).
    middle_Bx1 = (1 + (real_B - 2) // 2)[:, None]
    candidate_BxL = word_starts_BxL & (pos_1xL >= middle_Bx1) & (pos_1xL < real_B[:, None] - 1)
    split_B = tf.where(tf.reduce_any(candidate_BxL, axis=1),
                       tf.argmax(tf.cast(candidate_BxL, tf.int32), axis=1, output_type=tf.int32),
                       middle_Bx1[:, 0])
    split_B = tf.where(drawn_B & (real_B >= 4), split_B, seq_len)  # seq_len: no split
    split_Bx1 = split_B[:, None]

    def shifted(x_BxL):  # x[i-1] at position i
        return tf.concat([x_BxL[:, :1], x_BxL[:, :-1]], axis=1)

    ids_BxL = tf.where(pos_1xL < split_Bx1, ids_BxL,
                       tf.where(pos_1xL == split_Bx1, tokenizer.sep_id, shifted(ids_BxL)))
    # A full row pushed its last text token out: it still ends with [SEP].
    full_Bx1 = (real_B == seq_len)[:, None] & (split_Bx1 < seq_len)
    ids_BxL = tf.where(full_Bx1 & (pos_1xL == seq_len - 1), tokenizer.sep_id, ids_BxL)
    word_starts_BxL = tf.where(pos_1xL < split_Bx1, word_starts_BxL, (pos_1xL == split_Bx1 + 1) |
                               ((pos_1xL > split_Bx1) & shifted(word_starts_BxL)))
    types_BxL = tf.cast((pos_1xL > split_Bx1) & (ids_BxL != tokenizer.pad_id), tf.int32)
    return ids_BxL, word_starts_BxL, types_BxL


def _choose_words(score_draw_BxW, word_starts_BxL, maskable_BxL, mask_rate: float, budget: int,
                  seq_len: int):
    """The tokens chosen for prediction (`BxL` bool): k words taken in random-score order while
    their tokens fit the budget M, in two greedy passes."""
    batch = tf.shape(word_starts_BxL)[0]
    slot_W = tf.range(seq_len)
    # Word number of each token; -1 before the first word start (cannot happen for packed data).
    word_BxL = tf.cumsum(tf.cast(word_starts_BxL & maskable_BxL, tf.int32), axis=1) - 1
    maskable_BxL &= word_BxL >= 0
    num_words_B = word_BxL[:, -1] + 1
    # Word slots W = L (there are never more words than tokens); unused slots sort last.
    # Segment ids: row r's words at r·(L+1) + word, its non-words at r·(L+1) + L (dropped).
    row_offset_Bx1 = tf.range(batch)[:, None] * (seq_len + 1)
    segment_BxL = row_offset_Bx1 + tf.where(maskable_BxL, word_BxL, seq_len)
    word_len_BxW = tf.reshape(
        tf.math.unsorted_segment_sum(tf.ones_like(segment_BxL), segment_BxL, batch * (seq_len + 1)),
        [batch, seq_len + 1],
    )[:, :seq_len]
    num_to_mask_B = tf.where(
        num_words_B > 0,
        tf.maximum(1, tf.cast(mask_rate * tf.cast(num_words_B, tf.float32) + 0.5, tf.int32)),
        0,
    )
    is_word_BxW = slot_W < num_words_B[:, None]
    score_BxW = tf.where(is_word_BxW, score_draw_BxW, 2.0)
    order_BxW = tf.argsort(score_BxW, axis=1)
    len_BxW = tf.gather(word_len_BxW, order_BxW, batch_dims=1)  # words in random order
    fits_BxW = tf.gather(is_word_BxW, order_BxW, batch_dims=1) & (len_BxW <= budget)
    first_BxW = _take_prefix(len_BxW, fits_BxW, budget, num_to_mask_B[:, None])
    # A word overflowing the budget ends the first pass; shorter words after it may still fit.
    tokens_left_Bx1 = budget - tf.reduce_sum(len_BxW * tf.cast(first_BxW, tf.int32), axis=1,
                                             keepdims=True)
    words_left_Bx1 = num_to_mask_B[:, None] - tf.reduce_sum(tf.cast(first_BxW, tf.int32), axis=1,
                                                            keepdims=True)
    second_BxW = _take_prefix(
        len_BxW,
        fits_BxW & ~first_BxW & (len_BxW <= tokens_left_Bx1),
        tokens_left_Bx1,
        words_left_Bx1,
    )
    # argsort of a permutation is its inverse: back from score order to word order.
    chosen_BxW = tf.gather(first_BxW | second_BxW, tf.argsort(order_BxW, axis=1), batch_dims=1)
    return maskable_BxL & tf.gather(chosen_BxW, tf.maximum(word_BxL, 0), batch_dims=1)


def _prediction_slots(chosen_BxL, budget: int, seq_len: int):
    """(positions `BxM`, used `BxM`): slot m of a row holds the position of its m-th chosen token
    (at most M by the draw); unused slots hold position 0."""
    slot_L = tf.range(seq_len)
    rank_BxL = tf.where(chosen_BxL, tf.cumsum(tf.cast(chosen_BxL, tf.int32), axis=1) - 1, -1)
    positions_BxM = tf.reduce_sum(
        tf.one_hot(rank_BxL, budget, dtype=tf.int32) * slot_L[None, :, None], axis=1)
    count_B = tf.reduce_sum(tf.cast(chosen_BxL, tf.int32), axis=1)
    used_BxM = tf.range(budget)[None, :] < count_B[:, None]
    return positions_BxM, used_BxM


def _take_prefix(len_BxW, candidate_BxW, max_tokens, max_words):
    """Candidates, in order, while their running token and word counts stay within the limits."""
    tokens_BxW = tf.cumsum(len_BxW * tf.cast(candidate_BxW, tf.int32), axis=1)
    words_BxW = tf.cumsum(tf.cast(candidate_BxW, tf.int32), axis=1)
    return candidate_BxW & (tokens_BxW <= max_tokens) & (words_BxW <= max_words)


# --- counter-based random numbers ----------------------------------------------------------------
# splitmix64 (Steele, Lea & Flood, 2014): state_k = start + k·γ, output = mix(state_k). Keyed by
# (seed, stream), started per example g and indexed by position, so random numbers can be drawn
# for a whole batch in a few vectorized ops and still depend only on (seed, g, position).

_GAMMA = 0x9E3779B97F4A7C15


def _mix64(z: tf.Tensor) -> tf.Tensor:
    for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        z = _xor_shift(z, shift) * tf.constant(multiplier, tf.uint64)
    return _xor_shift(z, 31)


def _xor_shift(z: tf.Tensor, shift: int) -> tf.Tensor:
    return tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(shift, tf.uint64)))


def _stream_key(seed: int, stream: int) -> tf.Tensor:
    return _mix64(tf.constant(((seed * 3 + stream) * _GAMMA) % (1 << 64), tf.uint64))


def _bits(key: tf.Tensor, g_B: tf.Tensor, length: int) -> tf.Tensor:
    """[B, length] uint64 random words for examples g_B."""
    start_Bx1 = _mix64(tf.bitwise.bitwise_xor(key, _mix64(tf.bitcast(g_B, tf.uint64))))[:, None]
    steps_L = tf.cast(tf.range(1, length + 1), tf.uint64) * tf.constant(_GAMMA, tf.uint64)
    return _mix64(start_Bx1 + steps_L[None, :])


def _uniform(key: tf.Tensor, g_B: tf.Tensor, length: int) -> tf.Tensor:
    """[B, length] float32 uniform in [0, 1) with 24 random bits."""
    top24 = tf.bitwise.right_shift(_bits(key, g_B, length), tf.constant(40, tf.uint64))
    return tf.cast(top24, tf.float32) * 2.0 ** -24


def _below(key: tf.Tensor, g_B: tf.Tensor, length: int, n: int) -> tf.Tensor:
    """[B, length] int32 uniform in [0, n): 64-bit words mod n (bias ≤ n / 2^64)."""
    return tf.cast(tf.math.floormod(_bits(key, g_B, length), tf.constant(n, tf.uint64)), tf.int32)
