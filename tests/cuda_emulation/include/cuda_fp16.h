// Stands in for the CUDA toolkit header of this name in the emulation build.
#pragma once
#include "../cuda_emu.h"
