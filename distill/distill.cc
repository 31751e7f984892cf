// Anchor of the retort_distill library (its units are globbed; see CMakeLists.txt).
namespace retort::distill {
const char* kLibraryName = "retort_distill";
}  // namespace retort::distill
