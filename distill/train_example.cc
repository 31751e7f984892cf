#include "distill/train_example.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace retort {

int64_t TrainExample::num_trained() const {
  int64_t n = 0;
  for (uint8_t m : loss_mask) n += m != 0;
  return n;
}

void TrainExample::Append(const std::vector<int32_t>& ids, uint8_t mask) {
  tokens.insert(tokens.end(), ids.begin(), ids.end());
  loss_mask.insert(loss_mask.end(), ids.size(), mask);
}

void DataSummary::Merge(const DataSummary& o) {
  using S = DataSummary;
  for (int64_t S::*count :
       {&S::files, &S::examples, &S::train_examples, &S::eval_examples, &S::tokens,
        &S::trained_tokens, &S::teacher_examples, &S::truncated_examples, &S::truncated_tokens,
        &S::split_examples, &S::dropped_untrainable, &S::prompts_open_reasoning,
        &S::shard_examples}) {
    this->*count += o.*count;
  }
  for (const auto& [k, v] : o.skipped) skipped[k] += v;
}

std::string DataSummary::ToString() const {
  std::string s = absl::StrFormat(
      "data: %d files, %d examples (%d train, %d held out), %d tokens, %d trained, %d with teacher "
      "top-k\n",
      files, examples, train_examples, eval_examples, tokens, trained_tokens, teacher_examples);
  int64_t total_skipped = 0;
  for (const auto& [k, v] : skipped) total_skipped += v;
  if (total_skipped > 0) {
    absl::StrAppend(&s, "skipped ", total_skipped, " samples:");
    for (const auto& [k, v] : skipped) absl::StrAppend(&s, " ", k, " (", v, ")");
    s += "\n";
  }
  if (truncated_examples > 0) {
    absl::StrAppend(&s, "truncated ", truncated_examples, " examples longer than seq_len (",
                    truncated_tokens, " tokens cut)\n");
  }
  if (split_examples > 0) {
    absl::StrAppend(&s, "split ", split_examples, " examples longer than seq_len into pieces\n");
  }
  if (dropped_untrainable > 0) {
    absl::StrAppend(&s, "dropped ", dropped_untrainable,
                    " documents with no trained token within seq_len (prompt too long)\n");
  }
  if (prompts_open_reasoning > 0) {
    absl::StrAppend(
        &s, "note: ", prompts_open_reasoning, " of ", shard_examples,
        " token-shard prompts end inside an opened <think> (the teacher's think prefix): the "
        "student learns to reason after it; evaluate and serve it with think_prefix auto or on "
        "(off gives it prompts it never saw, and scores near 0%)\n");
  }
  return s;
}

}  // namespace retort
