#include "isa.h"

#include <atomic>
#include <cstddef>
#include <cstring>

namespace cnnext {
namespace cpu {
namespace {

constexpr Isa kAllIsas[] = {Isa::kAvx512, Isa::kAvx2, Isa::kBaseline};
constexpr CpuVendor kAllVendors[] = {CpuVendor::kIntel, CpuVendor::kAmd, CpuVendor::kOther};

// The value of `all` whose name_of is `name`, into `value`; false when none is.
template <typename E, size_t N>
bool parse_name(const char* name, const E (&all)[N], const char* (*name_of)(E), E& value) {
  for (const E candidate : all) {
    if (std::strcmp(name, name_of(candidate)) == 0) {
      value = candidate;
      return true;
    }
  }
  return false;
}

Isa detect() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  // __builtin_cpu_supports also checks that the OS saves the wider registers.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kBaseline;
}

std::atomic<int>& limit() {
  static std::atomic<int> value{static_cast<int>(Isa::kAvx512)};
  return value;
}

}  // namespace

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa active_isa() {
  const int lim = limit().load(std::memory_order_relaxed);
  const int det = static_cast<int>(detected_isa());
  return static_cast<Isa>(lim < det ? lim : det);
}

Isa set_isa_limit(Isa isa) { return static_cast<Isa>(limit().exchange(static_cast<int>(isa))); }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kBaseline:
      break;
  }
  return "baseline";
}

CpuVendor detected_vendor() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const CpuVendor vendor = __builtin_cpu_is("intel") ? CpuVendor::kIntel
                                  : __builtin_cpu_is("amd") ? CpuVendor::kAmd
                                                            : CpuVendor::kOther;
  return vendor;
#else
  return CpuVendor::kOther;
#endif
}

const char* vendor_name(CpuVendor vendor) {
  switch (vendor) {
    case CpuVendor::kIntel:
      return "intel";
    case CpuVendor::kAmd:
      return "amd";
    case CpuVendor::kOther:
      break;
  }
  return "other";
}

bool parse_vendor(const char* name, CpuVendor& vendor) { return parse_name(name, kAllVendors, vendor_name, vendor); }

bool parse_isa(const char* name, Isa& isa) { return parse_name(name, kAllIsas, isa_name, isa); }

}  // namespace cpu
}  // namespace cnnext
