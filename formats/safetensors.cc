#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/json_limits.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace retort {
namespace {

using json = nlohmann::json;

// Error messages must stay on one line and printable even when they quote
// bytes from a hostile file.
std::string Printable(const std::string& s, size_t max_len = 120) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= max_len) {
      out += "...";
      break;
    }
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  return out;
}

absl::Status Invalid(const std::string& path, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
}
absl::Status Loss(const std::string& path, const std::string& problem) {
  return absl::DataLossError(absl::StrCat(path, ": ", problem));
}

std::string Quoted(const std::string& name) { return absl::StrCat("\"", Printable(name), "\""); }

// Parses the header JSON, rejecting duplicate keys in any object (nlohmann
// would silently keep the last one, which would let two entries claim the
// same name).
absl::StatusOr<json> ParseHeaderJson(const std::string& path, const char* begin, const char* end) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string duplicate;
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && parsed.is_string() &&
            !keys.back().insert(parsed.get_ref<const std::string&>()).second && duplicate.empty()) {
          duplicate = parsed.get_ref<const std::string&>();
        }
        break;
      default:
        break;
    }
    return true;
  };
  // nlohmann stops at a NUL byte as if the input ended there, which would
  // accept anything after it; valid JSON never holds a raw NUL.
  if (const void* nul = std::memchr(begin, '\0', end - begin)) {
    return Invalid(path, absl::StrCat("header is not valid UTF-8 JSON: NUL byte at header offset ",
                                      static_cast<const char*>(nul) - begin));
  }
  // The parser's callback gives no way to stop a deep nesting before it
  // recurses, so the depth is checked on the bytes first.
  RETURN_IF_ERROR(
      CheckJsonDepth(std::string_view(begin, end - begin), absl::StrCat(path, ": header")));
  json header;
  try {
    header = json::parse(begin, end, callback, /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    std::string what = e.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " tag.
    if (size_t p = what.find("] ");
        what.rfind("[json.exception", 0) == 0 && p != std::string::npos) {
      what = what.substr(p + 2);
    }
    return Invalid(path, absl::StrCat("header is not valid UTF-8 JSON: ", Printable(what, 200)));
  }
  if (!duplicate.empty())
    return Invalid(path, absl::StrCat("header has duplicate key ", Quoted(duplicate)));
  return header;
}

// a * b, false on overflow.
bool MulU64(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& path, const std::string& name,
                                            const json& v) {
  std::string where = absl::StrCat("tensor ", Quoted(name));
  if (!v.is_object()) {
    return Invalid(path,
                   absl::StrCat(where, ": expected an object {dtype, shape, data_offsets}, got ",
                                v.type_name()));
  }
  SafetensorsEntry e;
  e.name = name;

  auto dtype_it = v.find("dtype");
  if (dtype_it == v.end()) return Invalid(path, absl::StrCat(where, ": missing \"dtype\""));
  if (!dtype_it->is_string()) {
    return Invalid(
        path, absl::StrCat(where, ": \"dtype\" must be a string, got ", dtype_it->type_name()));
  }
  const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
  auto dtype = ParseDType(dtype_name);
  if (!dtype.ok())
    return Invalid(path, absl::StrCat(where, ": unknown dtype ", Quoted(dtype_name)));
  e.dtype = *dtype;

  auto shape_it = v.find("shape");
  if (shape_it == v.end()) return Invalid(path, absl::StrCat(where, ": missing \"shape\""));
  if (!shape_it->is_array()) {
    return Invalid(
        path, absl::StrCat(where, ": \"shape\" must be an array, got ", shape_it->type_name()));
  }
  uint64_t numel = 1;
  for (const json& d : *shape_it) {
    if (d.is_number_integer() && !d.is_number_unsigned()) {
      return Invalid(path,
                     absl::StrCat(where, ": negative dimension ", d.get<int64_t>(), " in shape"));
    }
    if (!d.is_number_unsigned()) {
      return Invalid(path, absl::StrCat(where, ": shape must hold non-negative integers, got ",
                                        Printable(d.dump(), 40)));
    }
    uint64_t dim = d.get<uint64_t>();
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        !MulU64(numel, dim, &numel) ||
        numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Invalid(path, absl::StrCat(where, ": shape ", Printable(shape_it->dump(), 80),
                                        " has too many elements"));
    }
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  uint64_t bits;
  if (!MulU64(numel, static_cast<uint64_t>(DTypeBits(e.dtype)), &bits)) {
    return Invalid(path,
                   absl::StrCat(where, ": shape ", ShapeString(e.shape), " has too many elements"));
  }
  const uint64_t nbytes = bits / 8 + (bits % 8 ? 1 : 0);

  auto off_it = v.find("data_offsets");
  if (off_it == v.end()) return Invalid(path, absl::StrCat(where, ": missing \"data_offsets\""));
  if (!off_it->is_array() || off_it->size() != 2 || !(*off_it)[0].is_number_unsigned() ||
      !(*off_it)[1].is_number_unsigned()) {
    return Invalid(
        path,
        absl::StrCat(where, ": \"data_offsets\" must be [begin, end] non-negative integers, got ",
                     Printable(off_it->dump(), 60)));
  }
  e.begin = (*off_it)[0].get<uint64_t>();
  e.end = (*off_it)[1].get<uint64_t>();
  if (e.end < e.begin) {
    return Invalid(path, absl::StrCat(where, ": data_offsets [", e.begin, ", ", e.end,
                                      "] end before they begin"));
  }
  if (e.end - e.begin != nbytes) {
    return Invalid(
        path, absl::StrCat(where, ": data_offsets [", e.begin, ", ", e.end, "] hold ",
                           e.end - e.begin, " bytes, but ", std::string(DTypeName(e.dtype)), " ",
                           ShapeString(e.shape), " needs ", nbytes));
  }
  return e;
}

absl::Status ParseMetadata(const std::string& path, const json& v,
                           std::map<std::string, std::string>* metadata) {
  if (v.is_null()) return absl::OkStatus();
  if (!v.is_object()) {
    return Invalid(
        path, absl::StrCat("\"__metadata__\" must be an object of strings, got ", v.type_name()));
  }
  for (const auto& [key, value] : v.items()) {
    if (!value.is_string()) {
      return Invalid(path, absl::StrCat("\"__metadata__\" value for ", Quoted(key),
                                        " must be a string, got ", value.type_name()));
    }
    (*metadata)[key] = value.get<std::string>();
  }
  return absl::OkStatus();
}

// Alignment the element type wants (capped at 8, the widest we read).
size_t DTypeAlignment(DType t) {
  int bytes = DTypeBits(t) / 8;
  return bytes < 1 ? 1 : static_cast<size_t>(bytes);
}

std::string EncodeJsonString(const std::string& s) {
  // serde_json (used by the python library) and nlohmann escape identically:
  // '"', '\\', the short forms \b \f \n \r \t, other controls as \u00xx, and
  // raw UTF-8 otherwise. Throws on invalid UTF-8.
  return json(s).dump(-1, ' ', false, json::error_handler_t::strict);
}

}  // namespace

absl::Status ParseSafetensorsHeader(const std::string& path, const uint8_t* data, uint64_t size,
                                    std::vector<SafetensorsEntry>* entries,
                                    std::map<std::string, std::string>* metadata,
                                    uint64_t* data_start) {
  entries->clear();
  metadata->clear();
  if (size < 8) {
    return Loss(path,
                absl::StrCat("file is ", size, " bytes, too short for the 8-byte header length"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];  // little-endian
  if (n > kSafetensorsMaxHeaderBytes) {
    return Invalid(path,
                   absl::StrCat("header length ", n, " exceeds the limit of ",
                                kSafetensorsMaxHeaderBytes, " bytes (not a safetensors file?)"));
  }
  if (8 + n > size) {
    return Loss(path, absl::StrCat("header length ", n, " runs past the end of the ", size,
                                   "-byte file (truncated?)"));
  }
  const char* hbegin = reinterpret_cast<const char*>(data + 8);
  ASSIGN_OR_RETURN(json header, ParseHeaderJson(path, hbegin, hbegin + n));
  if (!header.is_object()) {
    return Invalid(path, absl::StrCat("header must be a JSON object, got ", header.type_name()));
  }

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      RETURN_IF_ERROR(ParseMetadata(path, value, metadata));
      continue;
    }
    ASSIGN_OR_RETURN(SafetensorsEntry e, ParseEntry(path, key, value));
    entries->push_back(std::move(e));
  }
  std::sort(entries->begin(), entries->end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });

  const uint64_t buffer_size = size - 8 - n;
  uint64_t expected = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry& e : *entries) {
    if (e.begin < expected) {
      return Invalid(path, absl::StrCat("tensor ", Quoted(e.name), " at [", e.begin, ", ", e.end,
                                        ") overlaps tensor ", Quoted(previous->name), " at [",
                                        previous->begin, ", ", previous->end, ")"));
    }
    if (e.begin > expected) {
      return Invalid(path,
                     absl::StrCat("gap in the data buffer: bytes [", expected, ", ", e.begin,
                                  ") before tensor ", Quoted(e.name), " belong to no tensor"));
    }
    if (e.end > buffer_size) {
      return Loss(path, absl::StrCat("tensor ", Quoted(e.name), " ends at byte ", e.end,
                                     " of the data buffer, but the file holds only ", buffer_size,
                                     " data bytes (truncated?)"));
    }
    expected = e.end;
    previous = &e;
  }
  if (expected != buffer_size) {
    return Invalid(path, absl::StrCat(buffer_size - expected,
                                      " trailing bytes after the last tensor (data buffer is ",
                                      buffer_size, " bytes, tensors cover ", expected, ")"));
  }
  *data_start = 8 + n;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::Open(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  std::unique_ptr<SafetensorsReader> r(new SafetensorsReader());
  r->path_ = path;
  RETURN_IF_ERROR(ParseSafetensorsHeader(path, file->data(), file->size(), &r->entries_,
                                         &r->metadata_, &r->data_start_));
  for (size_t i = 0; i < r->entries_.size(); ++i) r->index_[r->entries_[i].name] = i;
  r->file_ = std::move(file);
  return r;
}

const SafetensorsEntry* SafetensorsReader::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const uint8_t* SafetensorsReader::EntryData(const SafetensorsEntry& e) const {
  return file_->data() + data_start_ + e.begin;
}

absl::StatusOr<Tensor> SafetensorsReader::Get(const std::string& name) const {
  const SafetensorsEntry* e = Find(name);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor ", Quoted(name)));
  const uint8_t* p = EntryData(*e);
  if (reinterpret_cast<uintptr_t>(p) % DTypeAlignment(e->dtype) != 0) {
    // A writer that did not order tensors by alignment left this one
    // misaligned; hand out an aligned copy rather than a view that would make
    // data<T>() undefined behaviour.
    Tensor t = Tensor::Zeros(e->dtype, e->shape);
    if (e->end > e->begin) std::memcpy(t.mutable_raw(), p, e->end - e->begin);
    return t;
  }
  return Tensor::View(e->dtype, e->shape, p, file_, TensorLocation::kMapped);
}

absl::StatusOr<std::string> SafetensorsHeader(
    const std::vector<std::pair<std::string, Tensor>>& tensors,
    const std::map<std::string, std::string>& metadata) {
  std::set<std::string> names;
  std::string header = "{";
  try {
    if (!metadata.empty()) {
      header += "\"__metadata__\":{";
      bool first = true;
      for (const auto& [k, v] : metadata) {
        if (!first) header += ",";
        first = false;
        absl::StrAppend(&header, EncodeJsonString(k), ":", EncodeJsonString(v));
      }
      header += "}";
    }
  } catch (const json::exception&) {
    return absl::InvalidArgumentError("metadata is not valid UTF-8");
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty()) return absl::InvalidArgumentError("empty tensor name");
    if (name == "__metadata__")
      return absl::InvalidArgumentError("\"__metadata__\" is reserved, not a tensor name");
    if (!names.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name ", Quoted(name)));
    }
    for (int64_t d : t.shape()) {
      if (d < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor ", Quoted(name), " has negative dimension in shape ", ShapeString(t.shape())));
      }
    }
    if (t.raw() == nullptr && t.nbytes() > 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", Quoted(name), " has no data"));
    }
    std::string encoded;
    try {
      encoded = EncodeJsonString(name);
    } catch (const json::exception&) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor name ", Quoted(name), " is not valid UTF-8"));
    }
    const uint64_t end = offset + t.nbytes();
    absl::StrAppend(&header, header.size() > 1 ? "," : "", encoded, ":{\"dtype\":\"",
                    std::string(DTypeName(t.dtype())), "\",\"shape\":[",
                    absl::StrJoin(t.shape(), ","), "],\"data_offsets\":[", offset, ",", end, "]}");
    offset = end;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  if (header.size() > kSafetensorsMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("header would be ", header.size(),
                                                   " bytes, over the limit of ",
                                                   kSafetensorsMaxHeaderBytes));
  }
  return header;
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  auto header = SafetensorsHeader(tensors, metadata);
  if (!header.ok()) {
    return absl::Status(header.status().code(),
                        absl::StrCat(path, ": ", header.status().message()));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(path));
  uint8_t len[8];
  uint64_t n = header->size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  RETURN_IF_ERROR(file->Write(len, 8));
  RETURN_IF_ERROR(file->Write(header->data(), header->size()));
  for (const auto& [name, t] : tensors) {
    if (t.nbytes() > 0) RETURN_IF_ERROR(file->Write(t.raw(), t.nbytes()));
  }
  return file->Commit();
}

}  // namespace retort
