#include "model/tokenizer.h"

#include <gtest/gtest.h>

namespace retort {
namespace {
TEST(TokenizerTest, Placeholder) { SUCCEED(); }
}  // namespace
}  // namespace retort
