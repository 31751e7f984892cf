// Writes a synthetic `retort run` directory (manifest.json, recipe.textproto,
// metrics.jsonl, result.json) for the report tests. The numbers are made up;
// the layout is the run directory contract of issue 8.
#ifndef RETORT_TESTS_REPORT_RUN_FIXTURE_H_
#define RETORT_TESTS_REPORT_RUN_FIXTURE_H_

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "nlohmann/json.hpp"

namespace retort::testing {

// A label and a settings value that would inject markup (and script) if the
// page did not escape them.
inline constexpr char kEvilLabel[] =
    "<script>document.title='pwned'</script>\"><img src=x onerror=alert(1)> & co";
inline constexpr char kEvilSetting[] = "</pre><script>alert(2)</script>";

struct RunFixtureOptions {
  bool evil_label = true;           // the traces student's label is kEvilLabel
  bool failed_stage = false;        // eval_int4 failed (no result.json)
  bool drop_metrics_jsonl = false;  // distill_answers has no metrics.jsonl
  bool no_eval = false;             // the run has no eval stages
};

inline void WriteText(const std::filesystem::path& p, const std::string& text) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

// Counts of what the complete fixture (default options) draws.
inline constexpr int kFixtureDistillStages = 2;  // two loss polylines
inline constexpr int kFixtureEvalPointsPerStage = 2;
inline constexpr int kFixtureEvalStages = 5;  // bars and scatter points

inline void WriteRunFixture(const std::filesystem::path& dir, const RunFixtureOptions& opt = {}) {
  using Json = nlohmann::ordered_json;
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  WriteText(dir / "recipe.textproto",
            "# arithmetic, R1 in miniature\nname: \"arith-r1-mini\"\n"
            "stage { name: \"distill_traces\" distill { steps: 20 lr: 0.001 } }\n"
            "# a comment with <b>markup</b> & an ampersand\n");
  Json stages = Json::array();
  const auto stage = [](const std::string& name, const std::string& kind, const std::string& status,
                        double seconds) {
    return Json{{"name", name},
                {"kind", kind},
                {"status", status},
                {"fingerprint", std::string(64, 'a')},
                {"started", "2026-11-23T21:00:00Z"},
                {"seconds", seconds},
                {"settings", Json::object()},
                {"inputs", Json::array()},
                {"outputs", Json::array()},
                {"metrics", Json::object()},
                {"label", name}};
  };
  Json gen = stage("generate", "generate", "done", 41.5);
  gen["started"] = "2026-11-23T20:58:00Z";
  gen["settings"] = {{"teacher", "models/arith-teacher"}, {"samples", 4}, {"temperature", 0.6}};
  gen["outputs"] = Json::array(
      {{{"path", "generate/traces.jsonl"}, {"sha256", std::string(64, 'b')}, {"bytes", 45678}}});
  stages.push_back(gen);
  Json verify = stage("verify", "verify", "skipped", 0.2);
  verify["inputs"] =
      Json::array({{{"path", "generate/traces.jsonl"}, {"sha256", std::string(64, 'b')}}});
  stages.push_back(verify);

  // Two distill stages with decaying loss curves and two eval points each.
  const char* distill_names[] = {"distill_traces", "distill_answers"};
  for (int d = 0; d < 2; ++d) {
    Json s = stage(distill_names[d], "distill", "done", 93.2 + d);
    s["label"] = d == 0
                     ? (opt.evil_label ? std::string(kEvilLabel) : "student, distilled on traces")
                     : std::string("student, answers only");
    s["settings"] = {{"steps", 20}, {"lr", 0.001}, {"note", kEvilSetting}};
    s["metrics"] = {
        {"final_loss", 0.4 + 0.3 * d}, {"eval_loss", 0.45 + 0.3 * d}, {"tokens_per_s", 15000}};
    s["outputs"] = Json::array({{{"path", std::string(distill_names[d]) + "/final"},
                                 {"sha256", std::string(64, 'c')},
                                 {"bytes", 3456789}}});
    stages.push_back(s);
    if (d == 1 && opt.drop_metrics_jsonl) continue;
    std::string lines;
    for (int step = 1; step <= 20; ++step) {
      const double loss = 2.5 * std::exp(-0.15 * step) + 0.3 + 0.3 * d;
      lines += Json{{"step", step},           {"loss", loss},         {"lr", 0.001},
                    {"grad_norm", 1.0},       {"tokens", 512 * step}, {"tokens_per_s", 15000.0},
                    {"elapsed_s", 0.5 * step}}
                   .dump() +
               "\n";
      if (step % 10 == 0) lines += Json{{"step", step}, {"eval_loss", loss + 0.05}}.dump() + "\n";
    }
    WriteText(dir / distill_names[d] / "metrics.jsonl", lines);
  }
  Json quant = stage("quantize_int4", "quantize", "done", 3.1);
  quant["settings"] = {{"scheme", "int4"}, {"group_size", 64}};
  quant["outputs"] = Json::array({{{"path", "quantize_int4/final"}, {"bytes", 987654}}});
  stages.push_back(quant);

  if (!opt.no_eval) {
    struct Eval {
      const char* name;
      const char* label;
      const char* model;
      double accuracy, bytes;
    };
    const Eval evals[] = {
        {"eval_teacher", "teacher", "teacher", 0.97, 8.4e6},
        {"eval_traces", "student, traces", "distill_traces", 0.81, 3456789},
        {"eval_answers", "student, answers only", "distill_answers", 0.42, 3456789},
        {"eval_base", "student, before training", "init", 0.02, 3456789},
        {"eval_int4", "student, traces, INT4", "quantize_int4", 0.78, 987654}};
    for (const Eval& e : evals) {
      const bool failed = opt.failed_stage && std::string(e.name) == "eval_int4";
      Json s = stage(e.name, "eval", failed ? "failed" : "done", 12.0);
      s["label"] = e.label;
      s["settings"] = {{"model", e.model}, {"problems", 200}};
      if (failed) {
        s["error"] = "quantize_int4/final: no such file";
        stages.push_back(s);
        continue;
      }
      const Json result = {{"accuracy", e.accuracy}, {"correct", std::round(e.accuracy * 200)},
                           {"total", 200},           {"tokens_per_s", 812.5},
                           {"model_bytes", e.bytes}, {"model", e.model}};
      // eval_int4 keeps its numbers in result.json only (the page must read it).
      if (std::string(e.name) != "eval_int4") s["metrics"] = result;
      s["metrics"].erase("model");
      stages.push_back(s);
      WriteText(dir / e.name / "result.json", result.dump());
    }
  }
  const Json manifest = {{"recipe",
                          {{"name", "arith-r1-mini"},
                           {"path", "recipes/arith.textproto"},
                           {"sha256", std::string(64, 'd')}}},
                         {"retort_version", "0.1.0 (test)"},
                         {"machine", "AMD EPYC 7B13 | cpu (avx2 sgemm, 2 threads)"},
                         {"status", opt.failed_stage ? "failed" : "done"},
                         {"stages", stages}};
  WriteText(dir / "manifest.json", manifest.dump(2));
}

}  // namespace retort::testing

#endif  // RETORT_TESTS_REPORT_RUN_FIXTURE_H_
