// Every header the per-ISA kernels need that is not compiled per ISA: the
// standard library, ATen, and cnnext's ISA-neutral headers. A per-ISA
// translation unit includes this first, then switches the compiler to its
// ISA, then includes the kernel headers (whose code has internal linkage).
// Inline functions with external linkage (these headers' own, and the
// templates they define) are then only ever compiled for the baseline ISA, so
// whichever copy the linker keeps runs on every CPU.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "../params.h"
#include "cache_budget.h"
#include "conv2d_direct/geometry.h"
#include "conv2d_direct/tiles.h"
#include "conv2d_plan.h"
#include "isa.h"
#include "kernel_utils.h"
#include "variants.h"
