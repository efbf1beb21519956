"The label mask supervises every assistant token and its end-of-turn token, and nothing else, for each chat-template family."
import copy
import pytest
from finetune_kit.data import encode_chat
from finetune_kit.model import load_tokenizer

# simplified but faithful renderings of each family's template: (template, end-of-turn token, extra special tokens, has system)
TEMPLATES = {
    "chatml (SmolLM2, Qwen)": ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
                               "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", "<|im_end|>", [], True),
    "llama3": ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
               "<|eot_id|>", ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], True),
    "mistral": ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
                "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}", "</s>", ["</s>"], False),
    "gemma": ("{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
              "{{ '<start_of_turn>' + role + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}", "<end_of_turn>", ["<start_of_turn>", "<end_of_turn>"], False),
    "phi3": ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}", "<|end|>", ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"], True),
}

@pytest.fixture(scope="module")
def base_tok(): return load_tokenizer("smollm2-135m")

@pytest.mark.parametrize("family", TEMPLATES)
def test_mask_supervises_exactly_the_answers(base_tok, family):
    template, eot, specials, has_system = TEMPLATES[family]
    tok = copy.deepcopy(base_tok)
    if specials: tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template, tok.eos_token = template, eot
    answers = ["billing", "Two tickets: 12 and 7.\nBoth are late!"]
    msgs = ([{"role": "system", "content": "Route tickets."}] if has_system else []) + [
        {"role": "user", "content": "I was charged twice (billing?)"}, {"role": "assistant", "content": answers[0]},
        {"role": "user", "content": "And the parcels?"}, {"role": "assistant", "content": answers[1]}]
    enc = encode_chat(tok, msgs, max_seq_len=512)
    trained = [(i, t) for i, (t, l) in enumerate(zip(enc["input_ids"], enc["labels"])) if l != -100]
    assert all(enc["input_ids"][i] == l for i, l in ((i, enc["labels"][i]) for i, _ in trained))
    # group consecutive supervised positions into turns and decode each
    turns, cur, prev = [], [], None
    for i, t in trained:
        if prev is not None and i != prev + 1: turns.append(cur); cur = []
        cur.append(t); prev = i
    turns.append(cur)
    assert [tok.decode(t).strip() for t in turns] == [a + eot for a in answers], [tok.decode(t) for t in turns]

def test_weight_zero_turn_is_not_trained(base_tok):
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "first", "weight": 0},
            {"role": "user", "content": "b"}, {"role": "assistant", "content": "second"}]
    enc = encode_chat(base_tok, msgs)
    assert base_tok.decode([t for t, l in zip(enc["input_ids"], enc["labels"]) if l != -100]) == "second<|im_end|>"
