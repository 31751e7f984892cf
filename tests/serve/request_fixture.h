// A RequestContext over the byte tokenizer (tests/text/byte_tokenizer.h)
// and a ChatML template, shared by the serve/ tests.
#ifndef RETORT_TESTS_SERVE_REQUEST_FIXTURE_H_
#define RETORT_TESTS_SERVE_REQUEST_FIXTURE_H_

#include <memory>
#include <optional>
#include <string>

#include "serve/openai_request.h"
#include "tests/text/byte_tokenizer.h"
#include "text/chat_template.h"

namespace retort::serve::testing {

inline constexpr const char* kModel = "tiny-test";
inline constexpr const char* kChatMl =
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if think %}<think>\n{% endif %}"
    "{% endif %}";

struct RequestFixture {
  RequestFixture() {
    tokenizer = retort::testing::MakeByteTokenizer();
    auto t = ChatTemplate::Parse(kChatMl);
    if (t.ok()) chat_template = *std::move(t);
    context.model_name = kModel;
    context.context_length = 64;
    context.max_tokens_limit = 48;
    context.vocab_size = 300;
    context.tokenizer = tokenizer.get();
    context.chat_template = chat_template ? &*chat_template : nullptr;
    context.eos_ids = {retort::testing::kEndId};
    context.eos_id = retort::testing::kEndId;
  }
  std::unique_ptr<Tokenizer> tokenizer;
  std::optional<ChatTemplate> chat_template;
  RequestContext context;
};

}  // namespace retort::serve::testing

#endif  // RETORT_TESTS_SERVE_REQUEST_FIXTURE_H_
