// retort tokenize MODEL (--text FILE | --string TEXT | --chat FILE|JSON)
#include <iostream>

#include "absl/strings/str_cat.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/status.h"
#include "model/model_files.h"
#include "nlohmann/json.hpp"

namespace retort::cli {

int RunTokenize(const Args& args) {
  CommandSpec spec{.name = "tokenize",
                   .usage = "MODEL (--text FILE | --string TEXT | --chat FILE|JSON) [options]",
                   .summary =
                       "Print the token ids (and pieces) of a text or a chat rendered with the "
                       "model's chat template.",
                   .default_model = true};
  po::options_description opts("options");
  std::string model, text_file, inline_text, chat;
  opts.add_options()("model", po::value(&model)->required(),
                     "model directory, .gguf file or tokenizer.json")(
      "text", po::value(&text_file), "text file to tokenize")("string", po::value(&inline_text),
                                                              "text given on the command line")(
      "chat", po::value(&chat), "chat messages: a JSON file or inline JSON")(
      "add-generation-prompt", po::bool_switch(), "with --chat: open the assistant turn")(
      "no-special", po::bool_switch(), "do not add the tokenizer's special tokens (BOS)")(
      "count", po::bool_switch(), "print only the number of tokens")(
      "json", po::bool_switch(), "print JSON: {\"count\", \"ids\", \"pieces\"}");
  po::positional_options_description pos;
  pos.add("model", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  int sources = !text_file.empty() + vm.count("string") + !chat.empty();
  if (sources != 1) return UsageError(spec.name, "give exactly one of --text, --string, --chat");

  auto tokenizer = LoadTokenizer(model);
  if (!tokenizer.ok()) return Fail(spec.name, tokenizer.status());
  TextSource source{inline_text,
                    vm.count("string") > 0,
                    text_file,
                    chat,
                    vm["add-generation-prompt"].as<bool>(),
                    !vm["no-special"].as<bool>()};
  auto tokenized = TokenizeSource(model, **tokenizer, source, "text");
  if (!tokenized.ok()) return Fail(spec.name, tokenized.status());
  std::vector<int32_t> ids = *std::move(tokenized);

  if (vm["count"].as<bool>()) {
    std::cout << ids.size() << "\n";
    return kExitOk;
  }
  if (vm["json"].as<bool>()) {
    nlohmann::json out = {{"count", ids.size()}, {"ids", ids}, {"pieces", nlohmann::json::array()}};
    for (int32_t id : ids) out["pieces"].push_back((*tokenizer)->Decode({id}, false));
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return kExitOk;
  }
  for (int32_t id : ids) {
    nlohmann::json piece = (*tokenizer)->Decode({id}, false);
    std::cout << id << "\t" << piece.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n";
  }
  std::cerr << ids.size() << " tokens\n";
  return kExitOk;
}

}  // namespace retort::cli
