#!/usr/bin/env python3
"""Generate a tiny, random-weight Llama model directory that vLLM loads offline.

    make_tiny_model.py OUT_DIR [--seed N] [--vocab-size N]

Produces, deterministically (byte-identical files on every run with the same
package versions):
  config.json               LlamaForCausalLM, hidden 64, 2 layers, 4 heads (head_dim 32),
                            2 KV heads, max_position_embeddings 2048
  model.safetensors         seeded N(0, 0.02) weights (bfloat16, like Llama 3), ~1 MB
  tokenizer.json            byte-level BPE trained on tools/vllm/corpus/*.txt
  tokenizer_config.json     Llama-3 style special tokens + chat template
  special_tokens_map.json
  generation_config.json    bos/eos only (no sampling defaults, no max_new_tokens)

Only uses packages from the vLLM venv (tokenizers, numpy); the safetensors file is written
directly (no torch import, so the whole run takes well under a second after imports).
"""

import argparse
import glob
import json
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")  # BPE trainer: single thread, fixed order

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS_GLOB = os.path.join(HERE, "corpus", "*.txt")

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
BOS, EOS_TEXT, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"

# Meta-Llama-3-8B-Instruct's chat template (original release), verbatim.
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 32  # vLLM's CPU attention kernels support head sizes 32/64/80/96/112/128/...
INTERMEDIATE = 128
MAX_POS = 2048


def write_json(path, obj):
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")


def build_tokenizer(vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    files = sorted(glob.glob(CORPUS_GLOB))
    if not files:
        sys.exit(f"no corpus files matching {CORPUS_GLOB}")
    texts = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            texts.append(fh.read())

    tok = Tokenizer(models.BPE(byte_fallback=False, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    # one "document" per line keeps the trainer input order fixed
    lines = [ln for t in texts for ln in t.splitlines() if ln.strip()]
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    # specials get the highest ids, as in Llama 3 (128000+)
    tok.add_special_tokens(SPECIAL_TOKENS)
    bos_id = tok.token_to_id(BOS)
    # Llama 3 adds <|begin_of_text|> through the post-processor (used by /v1/completions;
    # chat requests get it from the template and tokenize with add_special_tokens=False)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0",
        pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
        special_tokens=[(BOS, bos_id)],
    )
    return tok


def tokenizer_config(tok):
    added = {}
    for t in SPECIAL_TOKENS:
        added[str(tok.token_to_id(t))] = {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
    return {
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOT,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": MAX_POS,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def model_config(vocab, bos_id, eos_ids):
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_ids,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POS,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": vocab,
    }


def weight_shapes(vocab):
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    shapes = [("model.embed_tokens.weight", (vocab, HIDDEN))]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (HIDDEN,)),
            (p + "self_attn.q_proj.weight", (q, HIDDEN)),
            (p + "self_attn.k_proj.weight", (kv, HIDDEN)),
            (p + "self_attn.v_proj.weight", (kv, HIDDEN)),
            (p + "self_attn.o_proj.weight", (HIDDEN, q)),
            (p + "post_attention_layernorm.weight", (HIDDEN,)),
            (p + "mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)),
            (p + "mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
            (p + "mlp.down_proj.weight", (HIDDEN, INTERMEDIATE)),
        ]
    shapes += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (vocab, HIDDEN))]
    return shapes


def bf16_bytes(a):
    """float32 ndarray -> little-endian bfloat16 bytes (round to nearest even)."""
    import numpy as np

    bits = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2").tobytes()


def build_weights(vocab, seed):
    """Seeded N(0, 0.02) weights, norms = 1, as bfloat16. numpy only (no torch import: ~6 s saved)."""
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(seed))
    tensors = []
    for name, shape in weight_shapes(vocab):
        if name.endswith("norm.weight"):
            a = np.ones(shape, dtype=np.float32)
        else:
            a = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        tensors.append((name, shape, bf16_bytes(a)))
    return tensors


def write_safetensors(path, tensors, metadata):
    """Minimal safetensors writer: 8-byte LE header size, JSON header (space-padded to 8 bytes),
    then the raw tensor bytes in header order. Same layout the safetensors library writes."""
    import struct

    header = {"__metadata__": metadata}
    offset = 0
    for name, shape, data in sorted(tensors):
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":"), sort_keys=False).encode()
    hjson += b" " * (-len(hjson) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hjson)))
        fh.write(hjson)
        for _name, _shape, data in sorted(tensors):
            fh.write(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab-size", type=int, default=3000,
                    help="target vocab incl. special tokens (may end smaller if the corpus runs out of merges)")
    args = ap.parse_args()

    os.makedirs(args.out_dir, exist_ok=True)
    tok = build_tokenizer(args.vocab_size)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    bos_id = tok.token_to_id(BOS)
    eos_ids = [tok.token_to_id(EOT), tok.token_to_id(EOS_TEXT)]

    # tokenizer.json: serialize via the Rust side (stable key order), re-indent for diffability
    tj = json.loads(tok.to_str())
    write_json(os.path.join(args.out_dir, "tokenizer.json"), tj)
    write_json(os.path.join(args.out_dir, "tokenizer_config.json"), tokenizer_config(tok))
    write_json(os.path.join(args.out_dir, "special_tokens_map.json"), {"bos_token": BOS, "eos_token": EOT})
    write_json(os.path.join(args.out_dir, "config.json"), model_config(vocab, bos_id, eos_ids))
    write_json(os.path.join(args.out_dir, "generation_config.json"),
               {"bos_token_id": bos_id, "eos_token_id": eos_ids})
    write_safetensors(os.path.join(args.out_dir, "model.safetensors"), build_weights(vocab, args.seed),
                      {"format": "pt"})
    print(f"wrote {args.out_dir}: vocab={vocab} bos={bos_id} eos={eos_ids}")


if __name__ == "__main__":
    main()
