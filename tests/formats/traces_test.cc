#include "formats/traces.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf_model.h"
#include "nlohmann/json.hpp"
#include "tests/formats/test_util.h"
#include "text/tokenizer.h"

namespace retort {
namespace {

using ::testing::HasSubstr;
using testing_util::ReadBytes;
using testing_util::ScratchDir;
using testing_util::SourceDir;
using testing_util::WriteBytes;

// ---- JSONL ----------------------------------------------------------------------

TraceSample FullSample() {
  TraceSample s;
  s.id = "q-17";
  s.sample = 3;
  s.messages.push_back({"system", "Be exact.", "", nlohmann::ordered_json::object()});
  s.messages.push_back({"user", "What is 2^10? \xE2\x88\x9A \xF0\x9F\x98\x80", "",
                        nlohmann::ordered_json::object()});
  TraceMessage a{"assistant", "\\boxed{1024}", "2^10 = 1024.\n<think> is literal here",
                 nlohmann::ordered_json::object()};
  a.extra["name"] = "teacher";
  s.messages.push_back(a);
  s.answer = "1024";
  s.correct = true;
  s.finish_reason = "stop";
  s.prompt_tokens = 21;
  s.completion_tokens = 9;
  s.time_s = 0.1 + 0.2;  // not exactly representable in decimal
  s.verifier = "math";
  s.extra["source"] = "unit";
  s.extra["meta"] = {{"k", 1}};
  return s;
}

void ExpectSameSample(const TraceSample& a, const TraceSample& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.sample, b.sample);
  ASSERT_EQ(a.messages.size(), b.messages.size());
  for (size_t i = 0; i < a.messages.size(); ++i) {
    EXPECT_EQ(a.messages[i].role, b.messages[i].role) << i;
    EXPECT_EQ(a.messages[i].content, b.messages[i].content) << i;
    EXPECT_EQ(a.messages[i].reasoning_content, b.messages[i].reasoning_content) << i;
    EXPECT_EQ(a.messages[i].extra, b.messages[i].extra) << i;
  }
  EXPECT_EQ(a.answer, b.answer);
  EXPECT_EQ(a.correct, b.correct);
  EXPECT_EQ(a.finish_reason, b.finish_reason);
  EXPECT_EQ(a.prompt_tokens, b.prompt_tokens);
  EXPECT_EQ(a.completion_tokens, b.completion_tokens);
  EXPECT_EQ(a.time_s, b.time_s);
  EXPECT_EQ(a.verifier, b.verifier);
  EXPECT_EQ(a.extra, b.extra);
}

TEST(TraceJsonlTest, NativeRoundTrip) {
  const TraceSample s = FullSample();
  const std::string line = TraceSampleToJsonLine(s);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  // Field order is the documented one.
  EXPECT_EQ(line.rfind("{\"id\":\"q-17\",\"sample\":3,\"messages\":[", 0), 0u) << line;
  absl::StatusOr<TraceSample> back = ParseTraceLine(line, 1, "t.jsonl");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameSample(s, *back);
  EXPECT_EQ(TraceSampleToJsonLine(*back), line);
  ASSERT_NE(back->Completion(), nullptr);
  EXPECT_EQ(back->Completion()->content, "\\boxed{1024}");
  EXPECT_EQ(back->PromptText(), s.messages[1].content);
}

// The assistant turn carries its reasoning inline, as open-r1's datasets do,
// so chat templates that ignore "reasoning_content" (most) still render it.
TEST(TraceJsonlTest, ReasoningIsInlineInTheAssistantContent) {
  const TraceSample s = FullSample();
  const nlohmann::ordered_json j = nlohmann::ordered_json::parse(TraceSampleToJsonLine(s));
  const nlohmann::ordered_json& a = j["messages"][2];
  EXPECT_EQ(a["role"], "assistant");
  EXPECT_EQ(a["content"],
            "<think>\n2^10 = 1024.\n<think> is literal here\n</think>\n\n\\boxed{1024}");
  EXPECT_FALSE(a.contains("reasoning_content"));
  // An assistant turn without reasoning is the answer alone.
  TraceSample plain = s;
  plain.messages[2].reasoning_content.clear();
  EXPECT_EQ(nlohmann::ordered_json::parse(TraceSampleToJsonLine(plain))["messages"][2]["content"],
            "\\boxed{1024}");
  // Lines written before (with "reasoning_content") still read the same.
  nlohmann::ordered_json old = j;
  old["messages"][2]["content"] = "\\boxed{1024}";
  old["messages"][2]["reasoning_content"] = "2^10 = 1024.\n<think> is literal here";
  absl::StatusOr<TraceSample> back = ParseTraceLine(old.dump(), 1, "old.jsonl");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameSample(s, *back);
}

TEST(TraceJsonlTest, OptionalFieldsOmittedAndDefaulted) {
  TraceSample s;
  s.id = "x";
  s.messages.push_back({"user", "hi", "", nlohmann::ordered_json::object()});
  const std::string line = TraceSampleToJsonLine(s);
  EXPECT_THAT(line, ::testing::Not(HasSubstr("\"answer\"")));
  EXPECT_THAT(line, ::testing::Not(HasSubstr("\"correct\"")));
  absl::StatusOr<TraceSample> back = ParseTraceLine(line, 1, "t.jsonl");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameSample(s, *back);
}

TEST(TraceJsonlTest, InvalidUtf8IsReplacedOnWrite) {
  TraceSample s;
  s.id = "bad\xFFid";
  const std::string line = TraceSampleToJsonLine(s);
  absl::StatusOr<TraceSample> back = ParseTraceLine(line, 1, "t.jsonl");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id, "bad\xEF\xBF\xBDid");
}

// Every dialect of tests/reference/traces/dialects.jsonl (written by Python's
// json module) gives the samples expected.json lists.
TEST(TraceJsonlTest, DialectsFromPythonFixture) {
  const std::string dir = SourceDir() + "/tests/reference/traces/";
  absl::StatusOr<std::string> expected_text = ReadFileToString(dir + "expected.json");
  ASSERT_TRUE(expected_text.ok()) << expected_text.status();
  const nlohmann::ordered_json expected = nlohmann::ordered_json::parse(*expected_text);
  absl::StatusOr<std::string> text = ReadFileToString(dir + "dialects.jsonl");
  ASSERT_TRUE(text.ok()) << text.status();

  std::vector<std::string> lines;
  for (size_t pos = 0; pos < text->size();) {
    size_t end = text->find('\n', pos);
    lines.push_back(text->substr(pos, end - pos));
    pos = end + 1;
  }
  ASSERT_EQ(lines.size(), expected.size());
  size_t total = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    SCOPED_TRACE("line " + std::to_string(i + 1));
    absl::StatusOr<std::vector<TraceSample>> got =
        ParseTraceLineSamples(lines[i], static_cast<int64_t>(i + 1), "dialects.jsonl");
    ASSERT_TRUE(got.ok()) << got.status();
    const auto& want = expected[i];
    ASSERT_EQ(got->size(), want.size());
    total += got->size();
    for (size_t k = 0; k < want.size(); ++k) {
      const TraceSample& s = (*got)[k];
      const auto& w = want[k];
      EXPECT_EQ(s.id, w["id"].get<std::string>());
      EXPECT_EQ(s.sample, w["sample"].get<int64_t>());
      ASSERT_EQ(s.messages.size(), w["messages"].size());
      for (size_t m = 0; m < s.messages.size(); ++m) {
        const auto& wm = w["messages"][m];
        EXPECT_EQ(s.messages[m].role, wm["role"].get<std::string>());
        EXPECT_EQ(s.messages[m].content, wm["content"].get<std::string>());
        EXPECT_EQ(s.messages[m].reasoning_content, wm.value("reasoning_content", std::string()));
      }
      EXPECT_EQ(s.answer.value_or("<none>"), w.value("answer", std::string("<none>")));
      if (w.contains("correct")) {
        ASSERT_TRUE(s.correct.has_value());
        EXPECT_EQ(*s.correct, w["correct"].get<bool>());
      } else {
        EXPECT_FALSE(s.correct.has_value());
      }
      EXPECT_EQ(s.finish_reason, w.value("finish_reason", std::string()));
      EXPECT_EQ(s.prompt_tokens, w.value("prompt_tokens", int64_t{0}));
      EXPECT_EQ(s.completion_tokens, w.value("completion_tokens", int64_t{0}));
      EXPECT_EQ(s.time_s, w.value("time_s", 0.0));
      EXPECT_EQ(s.verifier, w.value("verifier", std::string()));
      EXPECT_EQ(s.extra, w.value("extra", nlohmann::ordered_json::object()));
      // Whatever the dialect, our own line reads back the same.
      absl::StatusOr<TraceSample> again = ParseTraceLine(TraceSampleToJsonLine(s), 1, "x");
      ASSERT_TRUE(again.ok()) << again.status();
      ExpectSameSample(s, *again);
    }
    // The single-sample entry point returns the first.
    absl::StatusOr<TraceSample> first = ParseTraceLine(lines[i], static_cast<int64_t>(i + 1), "d");
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(first->sample, (*got)[0].sample);
  }
  absl::StatusOr<std::vector<TraceSample>> all = ReadTraceJsonl(dir + "dialects.jsonl");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), total);
}

TEST(TraceJsonlTest, OpenAiContentPartsAndNullContent) {
  absl::StatusOr<TraceSample> s = ParseTraceLine(
      R"({"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},)"
      R"({"role":"assistant","content":null,"tool_calls":[{"id":"c1"}]}]})",
      4, "chat.jsonl");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->id, "4");
  EXPECT_EQ(s->messages[0].content, "ab");
  EXPECT_EQ(s->messages[1].content, "");
  EXPECT_EQ(s->messages[1].extra["tool_calls"][0]["id"], "c1");
}

void ExpectError(const std::string& line, const std::vector<std::string>& parts) {
  absl::StatusOr<TraceSample> s = ParseTraceLine(line, 7, "in.jsonl");
  ASSERT_FALSE(s.ok()) << line;
  EXPECT_TRUE(absl::IsInvalidArgument(s.status())) << s.status();
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("in.jsonl:7: "));
  for (const std::string& p : parts) EXPECT_THAT(std::string(s.status().message()), HasSubstr(p));
}

TEST(TraceJsonlTest, ErrorsNameLineAndField) {
  ExpectError(R"({"id":"a","messages":[)", {"not valid JSON"});
  ExpectError(R"([1,2])", {"expected a JSON object"});
  ExpectError("", {"empty line"});
  ExpectError(R"({"id":"a","sample":0})", {"messages: missing"});
  ExpectError(R"({"id":"a","sample":"0","messages":[]})",
              {"sample: expected an integer, got string"});
  ExpectError(R"({"id":["a"],"messages":[]})", {"id: expected a string, got array"});
  ExpectError(R"({"messages":[{"role":"user","content":"x"},{"content":"y"}]})",
              {"messages[1].role: missing"});
  ExpectError(R"({"messages":[{"role":"user"}]})", {"messages[0].content: missing"});
  ExpectError(R"({"messages":[{"role":"user","content":5}]})",
              {"messages[0].content: expected a string"});
  ExpectError(R"({"messages":{"role":"user"}})", {"messages: expected a list"});
  ExpectError(R"({"messages":[],"correct":"yes"})", {"correct: expected true/false"});
  ExpectError(R"({"messages":[],"prompt_tokens":-1})", {"prompt_tokens: expected >= 0"});
  ExpectError(R"({"messages":[],"time_s":"1s"})", {"time_s: expected a number"});
  ExpectError(R"({"conversations":[{"from":"alien","value":"x"}]})",
              {"conversations[0].from: unknown speaker"});
  ExpectError(R"({"conversations":[{"from":"human"}]})", {"conversations[0].value: missing"});
  ExpectError(R"({"problem":"p","generations":["a",3]})", {"generations[1]: expected a string"});
  // Non-UTF-8 bytes: the line and byte are named (byte 25 is a 0xC3 lead byte without
  // continuation).
  ExpectError("{\"messages\":[],\"answer\":\"\xC3(\"}", {"invalid UTF-8 at byte 25"});
  ExpectError("{\"id\":\"\xED\xA0\x80\",\"messages\":[]}",
              {"invalid UTF-8 at byte 7"});                                 // surrogate
  ExpectError("{\"id\":\"\xC0\xAF\",\"messages\":[]}", {"invalid UTF-8"});  // overlong
}

TEST(TraceJsonlTest, ReadFileSkipsBlankLinesAndNamesBadLine) {
  ScratchDir dir;
  const std::string path = dir.File("t.jsonl");
  const std::string good = TraceSampleToJsonLine(FullSample());
  WriteBytes(path, good + "\r\n\n   \n" + good + "\n");
  absl::StatusOr<std::vector<TraceSample>> all = ReadTraceJsonl(path);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  ExpectSameSample((*all)[1], FullSample());

  WriteBytes(path, good + "\n" + good + "\n{\"id\":\"z\"}\n");
  all = ReadTraceJsonl(path);
  ASSERT_FALSE(all.ok());
  EXPECT_THAT(std::string(all.status().message()), HasSubstr(path + ":3: messages: missing"));

  all = ReadTraceJsonl(dir.File("missing.jsonl"));
  EXPECT_TRUE(absl::IsNotFound(all.status())) << all.status();
}

// ---- top-k encoding -------------------------------------------------------------

// Rows shaped like a language model's: a peaked top-1, a geometric tail, ids
// drawn with a Zipf-ish preference for small ids.
void RandomTopK(int64_t rows, int32_t k, int32_t vocab, uint32_t seed, std::vector<int32_t>* ids,
                std::vector<float>* logprobs) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  ids->clear();
  logprobs->clear();
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int32_t> row;
    while (static_cast<int32_t>(row.size()) < k) {
      const auto id = static_cast<int32_t>(std::pow(vocab, u(rng))) - 1;
      if (std::find(row.begin(), row.end(), id) == row.end()) row.push_back(id);
    }
    double lp = -3.0 * u(rng);
    for (int32_t i = 0; i < k; ++i) {
      ids->push_back(row[i]);
      logprobs->push_back(static_cast<float>(lp));
      lp -= 0.5 * u(rng) * u(rng);
    }
  }
}

void ExpectDecodesWithin(const std::vector<int32_t>& ids, const std::vector<float>& lps,
                         int64_t rows, int32_t k, const TopKEncoding& enc) {
  absl::StatusOr<std::string> bytes = EncodeTopK(ids, lps, rows, k, enc);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  std::vector<int32_t> ids2;
  std::vector<float> lps2;
  ASSERT_TRUE(DecodeTopK(*bytes, rows, k, &ids2, &lps2).ok());
  EXPECT_EQ(ids2, ids);
  ASSERT_EQ(lps2.size(), lps.size());
  const double bound = TopKMaxLogprobError(enc) + 1e-5;  // + f32 rounding
  double worst = 0;
  for (size_t i = 0; i < lps.size(); ++i) {
    if (std::isinf(lps[i])) {
      EXPECT_TRUE(std::isinf(lps2[i]) && lps2[i] < 0) << i;
      continue;
    }
    worst = std::max(worst, std::fabs(static_cast<double>(lps2[i]) - lps[i]));
    if (i % k > 0) {
      EXPECT_LE(lps2[i], lps2[i - 1]) << "decoded rows stay in rank order";
    }
  }
  EXPECT_LE(worst, bound) << "step_bits " << enc.step_bits;
}

TEST(TopKTest, RoundTripWithinDocumentedError) {
  std::vector<int32_t> ids;
  std::vector<float> lps;
  for (int32_t k : {1, 2, 5, 64}) {
    RandomTopK(200, k, 151936, 7 + k, &ids, &lps);
    for (int bits : {0, 4, 6, 8, 12}) {
      ExpectDecodesWithin(ids, lps, 200, k, TopKEncoding{bits, std::min(bits, 4), 1});
      ExpectDecodesWithin(ids, lps, 200, k, TopKEncoding{bits, bits, 0});  // uniform steps
    }
    ExpectDecodesWithin(ids, lps, 200, k, TopKEncoding{});
  }
  EXPECT_DOUBLE_EQ(TopKMaxLogprobError(TopKEncoding{}), 1.0 / 32);
  EXPECT_DOUBLE_EQ(TopKMaxLogprobError(TopKEncoding{6, 6, 0}), 1.0 / 128);
  EXPECT_DOUBLE_EQ(TopKMaxLogprobError(TopKEncoding{12, 12, 0}), 1.0 / 8192);
  // Within tail_from_nats of the top-1 the fine step applies.
  ids = {0, 1, 2, 3};
  lps = {-0.3f, -0.31f, -2.2f, -4.25f};
  absl::StatusOr<std::string> b = EncodeTopK(ids, lps, 1, 4);
  ASSERT_TRUE(b.ok());
  std::vector<int32_t> ids2;
  std::vector<float> lps2;
  ASSERT_TRUE(DecodeTopK(*b, 1, 4, &ids2, &lps2).ok());
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(lps2[i], lps[i], 1.0 / 128 + 1e-6) << i;
  EXPECT_NEAR(lps2[3], lps[3], 1.0 / 32 + 1e-6);
}

TEST(TopKTest, EdgeValues) {
  const float inf = std::numeric_limits<float>::infinity();
  // Ties, -inf tails, a top-1 log-prob slightly above 0 (rounding), the
  // largest accepted id, k equal to the id space.
  std::vector<int32_t> ids = {5, 0, 9, (1 << 24) - 1, 3, 2, 1, 0};
  std::vector<float> lps = {1e-7f, -2.0f, -2.0f, -inf, -40.0f, -40.0f, -inf, -inf};
  ExpectDecodesWithin(ids, lps, 2, 4, TopKEncoding{});
  ids = {2, 0, 1};
  lps = {-0.5f, -1.0f, -1.5f};
  ExpectDecodesWithin(ids, lps, 1, 3, TopKEncoding{});
  // Zero rows.
  absl::StatusOr<std::string> empty = EncodeTopK({}, {}, 0, 64);
  ASSERT_TRUE(empty.ok());
  std::vector<int32_t> i2;
  std::vector<float> l2;
  EXPECT_TRUE(DecodeTopK(*empty, 0, 64, &i2, &l2).ok());
  EXPECT_TRUE(i2.empty());
}

TEST(TopKTest, RejectsBadInput) {
  auto err = [](std::vector<int32_t> ids, std::vector<float> lps, int64_t rows, int32_t k) {
    absl::StatusOr<std::string> s = EncodeTopK(ids, lps, rows, k);
    EXPECT_FALSE(s.ok());
    return std::string(s.status().message());
  };
  EXPECT_THAT(err({1, 1}, {-1, -2}, 1, 2), HasSubstr("appears twice"));
  EXPECT_THAT(err({1, 2}, {-2, -1}, 1, 2), HasSubstr("rank order"));
  EXPECT_THAT(err({1, 2}, {-1, NAN}, 1, 2), HasSubstr("NaN"));
  EXPECT_THAT(err({1, 2}, {-INFINITY, -INFINITY}, 1, 2), HasSubstr("top-1"));
  EXPECT_THAT(err({1, -2}, {-1, -2}, 1, 2), HasSubstr("id -2"));
  EXPECT_THAT(err({1, 2, 3}, {-1, -2}, 1, 2), HasSubstr("expected 1 x 2"));
  EXPECT_FALSE(EncodeTopK({1}, {-1}, 1, 1, TopKEncoding{4, 6, 4}).ok());  // tail finer than head
  EXPECT_FALSE(EncodeTopK({1}, {-1}, 1, 1, TopKEncoding{13, 4, 4}).ok());
}

TEST(TopKTest, DecodeRejectsDamagedBytesWithoutCrashing) {
  std::vector<int32_t> ids;
  std::vector<float> lps;
  RandomTopK(20, 8, 5000, 3, &ids, &lps);
  absl::StatusOr<std::string> bytes = EncodeTopK(ids, lps, 20, 8);
  ASSERT_TRUE(bytes.ok());
  std::vector<int32_t> i2;
  std::vector<float> l2;
  EXPECT_FALSE(DecodeTopK(*bytes, 21, 8, &i2, &l2).ok());  // wrong row count
  EXPECT_FALSE(DecodeTopK(*bytes, 19, 8, &i2, &l2).ok());
  for (size_t cut = 0; cut < bytes->size(); ++cut) {
    EXPECT_FALSE(DecodeTopK(bytes->substr(0, cut), 20, 8, &i2, &l2).ok()) << cut;
  }
  std::mt19937 rng(1);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string b = *bytes;
    b[rng() % b.size()] ^= static_cast<char>(1 + rng() % 255);
    (void)DecodeTopK(b, 20, 8, &i2, &l2);  // any answer, no crash
  }
}

// ---- shards -----------------------------------------------------------------------

TraceTokens MakeRecord(const std::string& id, int32_t sample, int64_t completion, int32_t k,
                       uint32_t seed, bool sampled) {
  TraceTokens r;
  r.id = id;
  r.sample = sample;
  std::mt19937 rng(seed);
  for (int i = 0; i < 10; ++i) r.prompt_ids.push_back(static_cast<int32_t>(rng() % 49152));
  for (int64_t i = 0; i < completion; ++i)
    r.completion_ids.push_back(static_cast<int32_t>(rng() % 49152));
  r.top_k = k;
  RandomTopK(completion, k, 49152, seed, &r.topk_ids, &r.topk_logprobs);
  if (sampled) {
    for (int64_t i = 0; i < completion; ++i)
      r.sampled_logprobs.push_back(-0.01f * static_cast<float>(i));
  }
  return r;
}

void ExpectSameRecord(const TraceTokens& a, const TraceTokens& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.sample, b.sample);
  EXPECT_EQ(a.prompt_ids, b.prompt_ids);
  EXPECT_EQ(a.completion_ids, b.completion_ids);
  EXPECT_EQ(a.top_k, b.top_k);
  EXPECT_EQ(a.topk_ids, b.topk_ids);
  EXPECT_EQ(a.sampled_logprobs, b.sampled_logprobs);
  ASSERT_EQ(a.topk_logprobs.size(), b.topk_logprobs.size());
  for (size_t i = 0; i < a.topk_logprobs.size(); ++i) {
    EXPECT_NEAR(a.topk_logprobs[i], b.topk_logprobs[i], TopKMaxLogprobError({}) + 1e-5) << i;
  }
}

std::vector<TraceTokens> ReadAll(const std::string& path, absl::Status* tail, int64_t* valid) {
  std::vector<TraceTokens> out;
  absl::StatusOr<TraceShardReader> reader = TraceShardReader::Open(path);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return out;
  *tail = absl::OkStatus();
  while (true) {
    TraceTokens r;
    absl::StatusOr<bool> more = reader->Next(&r);
    if (!more.ok()) {
      *tail = more.status();
      absl::StatusOr<bool> after = reader->Next(&r);  // reported once, then the end
      EXPECT_TRUE(after.ok() && !*after) << *tail << " then " << after.status();
      break;
    }
    if (!*more) break;
    out.push_back(std::move(r));
  }
  *valid = reader->valid_bytes();
  return out;
}

TEST(TraceShardTest, RoundTripAcrossCommitsAndAppend) {
  ScratchDir dir;
  const std::string path = dir.File("shard.bin");
  std::vector<TraceTokens> records = {
      MakeRecord("a", 0, 50, 64, 1, true), MakeRecord("a", 1, 0, 64, 2, false),
      MakeRecord("b\xC3\xA9", 0, 7, 0, 3, true), MakeRecord("c", 2, 33, 5, 4, false)};
  {
    absl::StatusOr<TraceShardWriter> w = TraceShardWriter::Open(path, false);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE(w->Append(records[0]).ok());
    ASSERT_TRUE(w->Append(records[1]).ok());
    ASSERT_TRUE(w->Commit().ok());
    ASSERT_TRUE(w->Append(records[2]).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  {
    absl::StatusOr<TraceShardWriter> w = TraceShardWriter::Open(path, true);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->truncated_bytes(), 0);
    ASSERT_TRUE(w->Append(records[3]).ok());
  }  // the destructor commits
  absl::Status tail;
  int64_t valid = 0;
  std::vector<TraceTokens> got = ReadAll(path, &tail, &valid);
  EXPECT_TRUE(tail.ok()) << tail;
  ASSERT_EQ(got.size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) ExpectSameRecord(records[i], got[i]);
  EXPECT_EQ(valid, static_cast<int64_t>(std::filesystem::file_size(path)));

  absl::StatusOr<TraceShardStats> stats = ComputeTraceShardStats(path);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->records, 4);
  EXPECT_EQ(stats->frames, 3);
  EXPECT_EQ(stats->prompt_tokens, 40);
  EXPECT_EQ(stats->completion_tokens, 50 + 7 + 33);
  EXPECT_EQ(stats->topk_entries, 50 * 64 + 33 * 5);
  EXPECT_EQ(stats->file_bytes, valid);
  EXPECT_EQ(stats->tail, "");
  EXPECT_DOUBLE_EQ(stats->bytes_per_completion_token, static_cast<double>(valid) / 90);
}

TEST(TraceShardTest, AppendRejectsInconsistentRecords) {
  ScratchDir dir;
  absl::StatusOr<TraceShardWriter> w = TraceShardWriter::Open(dir.File("s.bin"), false);
  ASSERT_TRUE(w.ok());
  TraceTokens r = MakeRecord("r", 0, 4, 3, 1, true);
  r.topk_ids.pop_back();
  EXPECT_THAT(std::string(w->Append(r).message()), HasSubstr("expected completion 4 x top_k 3"));
  r = MakeRecord("r", 0, 4, 3, 1, true);
  r.sampled_logprobs.pop_back();
  EXPECT_THAT(std::string(w->Append(r).message()), HasSubstr("sampled log-probs"));
  r = MakeRecord("r", 0, 4, 3, 1, true);
  std::swap(r.topk_logprobs[0], r.topk_logprobs[2]);
  EXPECT_THAT(std::string(w->Append(r).message()),
              HasSubstr("trace record \"r\" sample 0: top-k: row 0"));
  r = MakeRecord("\xFF", 0, 4, 3, 1, true);
  EXPECT_THAT(std::string(w->Append(r).message()), HasSubstr("not UTF-8"));
  EXPECT_EQ(w->records_appended(), 0);
  EXPECT_TRUE(w->Close().ok());
  EXPECT_EQ(std::filesystem::file_size(dir.File("s.bin")), 0u);
}

// A crash while the last frame was being written: every cut inside it leaves
// the first frame's records readable and the tail reported; resuming cuts the
// tail and appends after the intact prefix.
TEST(TraceShardTest, TruncatedLastFrameAtEveryByte) {
  ScratchDir dir;
  const std::string path = dir.File("shard.bin");
  const std::vector<TraceTokens> first = {MakeRecord("p", 0, 6, 4, 11, true),
                                          MakeRecord("p", 1, 3, 4, 12, false)};
  const TraceTokens last = MakeRecord("q", 0, 5, 4, 13, true);
  {
    absl::StatusOr<TraceShardWriter> w = TraceShardWriter::Open(path, false);
    ASSERT_TRUE(w.ok());
    for (const auto& r : first) ASSERT_TRUE(w->Append(r).ok());
    ASSERT_TRUE(w->Commit().ok());
  }
  const int64_t first_end = static_cast<int64_t>(std::filesystem::file_size(path));
  {
    absl::StatusOr<TraceShardWriter> w = TraceShardWriter::Open(path, true);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->Append(last).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  const std::string whole = ReadBytes(path);
  ASSERT_GT(static_cast<int64_t>(whole.size()), first_end);
  const std::string cut_path = dir.File("cut.bin");
  for (int64_t cut = first_end; cut < static_cast<int64_t>(whole.size()); ++cut) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    WriteBytes(cut_path, whole.substr(0, cut));
    absl::Status tail;
    int64_t valid = -1;
    std::vector<TraceTokens> got = ReadAll(cut_path, &tail, &valid);
    ASSERT_EQ(got.size(), first.size());
    for (size_t i = 0; i < first.size(); ++i) ExpectSameRecord(first[i], got[i]);
    EXPECT_EQ(valid, first_end);
    if (cut == first_end) {
      EXPECT_TRUE(tail.ok()) << tail;  // a clean end between frames
      continue;
    }
    EXPECT_TRUE(absl::IsDataLoss(tail)) << tail;
    EXPECT_THAT(std::string(tail.message()),
                HasSubstr(absl::StrCat("corrupt zstd frame at byte ", first_end, " of ", cut)));
    absl::StatusOr<TraceShardStats> stats = ComputeTraceShardStats(cut_path);
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->records, 2);
    EXPECT_EQ(stats->valid_bytes, first_end);
    EXPECT_NE(stats->tail, "");
  }
  // Resume on a cut file: the tail goes, new records follow the prefix.
  WriteBytes(cut_path, whole.substr(0, whole.size() - 3));
  {
    absl::StatusOr<TraceShardWriter> w = TraceShardWriter::Open(cut_path, true);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->truncated_bytes(), static_cast<int64_t>(whole.size()) - 3 - first_end);
    ASSERT_TRUE(w->Append(last).ok());
    ASSERT_TRUE(w->Commit().ok());
  }
  EXPECT_EQ(ReadBytes(cut_path), whole);
}

TEST(TraceShardTest, CorruptByteInLastFrameIsDataLoss) {
  ScratchDir dir;
  const std::string path = dir.File("shard.bin");
  {
    absl::StatusOr<TraceShardWriter> w = TraceShardWriter::Open(path, false);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->Append(MakeRecord("a", 0, 20, 8, 1, true)).ok());
    ASSERT_TRUE(w->Commit().ok());
    ASSERT_TRUE(w->Append(MakeRecord("b", 0, 20, 8, 2, true)).ok());
  }
  absl::Status tail;
  int64_t valid = 0;
  const std::string whole = ReadBytes(path);
  ASSERT_EQ(ReadAll(path, &tail, &valid).size(), 2u);
  const int64_t first_end = [&] {
    absl::StatusOr<TraceShardReader> r = TraceShardReader::Open(path);
    TraceTokens t;
    (void)r->Next(&t);
    return r->valid_bytes();
  }();
  std::mt19937 rng(5);
  int flagged = 0;
  for (int trial = 0; trial < 200; ++trial) {
    std::string bad = whole;
    const int64_t at = first_end + static_cast<int64_t>(rng() % (whole.size() - first_end));
    bad[at] ^= static_cast<char>(1 << (rng() % 8));
    WriteBytes(path, bad);
    std::vector<TraceTokens> got = ReadAll(path, &tail, &valid);
    ASSERT_GE(got.size(), 1u);
    EXPECT_EQ(got[0].id, "a");
    if (got.size() == 1) {
      EXPECT_TRUE(absl::IsDataLoss(tail)) << tail;
      EXPECT_EQ(valid, first_end);
      ++flagged;
    }
  }
  // zstd's frame checksum catches (nearly) every flip.
  EXPECT_GE(flagged, 195);
}

TEST(TraceShardTest, OpenErrors) {
  ScratchDir dir;
  EXPECT_TRUE(absl::IsNotFound(TraceShardReader::Open(dir.File("none.bin")).status()));
  absl::StatusOr<TraceShardWriter> w = TraceShardWriter::Open(dir.File("no/such/dir/x.bin"), false);
  EXPECT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("no/such/dir/x.bin"));
  // A file that is not a shard at all: no records, the whole file is the tail.
  WriteBytes(dir.File("junk.bin"), "not a zstd frame");
  absl::StatusOr<TraceShardStats> stats = ComputeTraceShardStats(dir.File("junk.bin"));
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->records, 0);
  EXPECT_EQ(stats->valid_bytes, 0);
  EXPECT_THAT(stats->tail, HasSubstr("at byte 0 of 16"));
}

// ---- real teacher log-probs ----------------------------------------------------------

// Top-64 log-probs of the real SmolLM2-135M on real text (the GPL-3 licence),
// stored the way `retort generate` stores a sample: bytes on disk per token
// must stay within the 150 bytes/token budget at K=64, ids exact, log-probs
// within the documented error.
TEST(TraceShardTest, StartsLikeTraceShardLooksAtTheZstdMagic) {
  ScratchDir dir;
  const std::string shard = dir.File("shard.bin");
  {
    absl::StatusOr<TraceShardWriter> w = TraceShardWriter::Open(shard, false);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE(w->Append(MakeRecord("a", 0, 5, 4, 1, true)).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  EXPECT_TRUE(StartsLikeTraceShard(shard));
  WriteBytes(dir.File("magic_only.bin"), std::string("\x28\xb5\x2f\xfd", 4));
  EXPECT_TRUE(StartsLikeTraceShard(dir.File("magic_only.bin")));
  WriteBytes(dir.File("traces.jsonl"), "{\"id\": \"a\"}\n");
  EXPECT_FALSE(StartsLikeTraceShard(dir.File("traces.jsonl")));
  WriteBytes(dir.File("short.bin"), std::string("\x28\xb5\x2f", 3));
  EXPECT_FALSE(StartsLikeTraceShard(dir.File("short.bin")));
  WriteBytes(dir.File("swapped.bin"), std::string("\xfd\x2f\xb5\x28", 4));
  EXPECT_FALSE(StartsLikeTraceShard(dir.File("swapped.bin")));
  EXPECT_FALSE(StartsLikeTraceShard(dir.File("missing.bin")));
  EXPECT_FALSE(StartsLikeTraceShard(dir.path()));  // a folder
}

TEST(TraceShardTest, RealSmolLm2TopK64BytesPerToken) {
  const std::string model_path = SourceDir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  ASSERT_TRUE(std::filesystem::exists(model_path))
      << model_path << " is missing: run scripts/fetch-models before the tests";
  absl::StatusOr<std::unique_ptr<GgufReader>> gguf = GgufReader::Open(model_path);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  absl::StatusOr<TokenizerParts> parts = TokenizerPartsFromGguf(**gguf);
  ASSERT_TRUE(parts.ok()) << parts.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromParts(*parts);
  ASSERT_TRUE(tok.ok()) << tok.status();
  absl::StatusOr<std::unique_ptr<Transformer>> model = LoadGgufTransformer(model_path);
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<std::string> text = ReadFileToString("/usr/share/common-licenses/GPL-3");
  ASSERT_TRUE(text.ok()) << text.status();

  constexpr int32_t kK = 64;
  constexpr int64_t kTokens = 600;  // per record; 2 records
  std::vector<int32_t> all_ids = (*tok)->Encode(*text, false);
  ASSERT_GE(all_ids.size(), static_cast<size_t>(2 * kTokens + 2));
  const int64_t vocab = (*model)->config().vocab_size;

  ScratchDir dir;
  const std::string path = dir.File("real.bin");
  std::vector<TraceTokens> written;
  {
    absl::StatusOr<TraceShardWriter> w = TraceShardWriter::Open(path, false);
    ASSERT_TRUE(w.ok());
    for (int rec = 0; rec < 2; ++rec) {
      // Prompt: 16 tokens; completion: the next kTokens tokens of the text,
      // scored by the model (teacher forcing).
      const int64_t start = rec * (kTokens + 16);
      std::vector<int32_t> seq(all_ids.begin() + start, all_ids.begin() + start + 16 + kTokens);
      absl::StatusOr<std::vector<float>> logits = (*model)->Logits(seq);
      ASSERT_TRUE(logits.ok()) << logits.status();
      TraceTokens r;
      r.id = "gpl3-" + std::to_string(rec);
      r.prompt_ids.assign(seq.begin(), seq.begin() + 16);
      r.completion_ids.assign(seq.begin() + 16, seq.end());
      r.top_k = kK;
      std::vector<int32_t> order(vocab);
      for (int64_t t = 15; t < 15 + kTokens; ++t) {  // row t predicts seq[t + 1]
        const float* row = logits->data() + t * vocab;
        double mx = *std::max_element(row, row + vocab), sum = 0;
        for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
        const double lse = mx + std::log(sum);
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(
            order.begin(), order.begin() + kK, order.end(),
            [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
        for (int32_t i = 0; i < kK; ++i) {
          r.topk_ids.push_back(order[i]);
          r.topk_logprobs.push_back(static_cast<float>(row[order[i]] - lse));
        }
        r.sampled_logprobs.push_back(static_cast<float>(row[seq[t + 1]] - lse));
      }
      ASSERT_TRUE(w->Append(r).ok());
      written.push_back(std::move(r));
    }
    ASSERT_TRUE(w->Close().ok());
  }
  absl::Status tail;
  int64_t valid = 0;
  std::vector<TraceTokens> got = ReadAll(path, &tail, &valid);
  ASSERT_TRUE(tail.ok()) << tail;
  ASSERT_EQ(got.size(), written.size());
  double worst_lp = 0, worst_head_lp = 0, worst_p = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ExpectSameRecord(written[i], got[i]);
    for (size_t j = 0; j < got[i].topk_logprobs.size(); ++j) {
      const double a = written[i].topk_logprobs[j], b = got[i].topk_logprobs[j];
      const double top1 = written[i].topk_logprobs[j - j % kK];
      worst_lp = std::max(worst_lp, std::fabs(a - b));
      if (top1 - a < 3.99) worst_head_lp = std::max(worst_head_lp, std::fabs(a - b));
      worst_p = std::max(worst_p, std::fabs(std::exp(a) - std::exp(b)));
    }
  }
  absl::StatusOr<TraceShardStats> stats = ComputeTraceShardStats(path);
  ASSERT_TRUE(stats.ok());
  std::printf(
      "SmolLM2-135M top-%d, %lld tokens: %lld bytes on disk, %.1f bytes/token "
      "(max |dlogprob| %.5f, within 4 nats of the top-1 %.5f, max |dp| %.5f)\n",
      kK, static_cast<long long>(stats->completion_tokens),
      static_cast<long long>(stats->file_bytes), stats->bytes_per_completion_token, worst_lp,
      worst_head_lp, worst_p);
  EXPECT_LE(stats->bytes_per_completion_token, 150.0);
  EXPECT_LE(worst_lp, TopKMaxLogprobError({}) + 1e-5);
  EXPECT_LE(worst_head_lp, 1.0 / 128 + 1e-5);
  EXPECT_LE(worst_p, 0.004);
}

}  // namespace
}  // namespace retort
