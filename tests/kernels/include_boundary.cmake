cmake_policy(SET CMP0009 NEW)
# The backend boundary (kernels/README.md): outside kernels/ and its tests and
# benchmarks, no source includes a backend's own headers (kernels/cpu/...,
# kernels/cuda/...): numeric code is reached through kernels/backend.h only.
# Run as: cmake -DROOT=<source dir> -P include_boundary.cmake (a ctest test).
if(NOT ROOT)
  message(FATAL_ERROR "include_boundary.cmake: pass -DROOT=<source dir>")
endif()
file(GLOB_RECURSE sources RELATIVE "${ROOT}"
  "${ROOT}/*.h" "${ROOT}/*.cc" "${ROOT}/*.cu" "${ROOT}/*.cuh")
set(offenders "")
foreach(f IN LISTS sources)
  if(f MATCHES "^(kernels|tests/kernels|benchmarks)/" OR f MATCHES "^build" OR f MATCHES "^\\.")
    continue()
  endif()
  file(STRINGS "${ROOT}/${f}" hits REGEX "^[ \t]*#[ \t]*include[ \t]*[\"<]kernels/(cpu|cuda)/")
  foreach(h IN LISTS hits)
    string(STRIP "${h}" h)
    list(APPEND offenders "${f}: ${h}")
  endforeach()
endforeach()
if(offenders)
  list(JOIN offenders "\n  " text)
  message(FATAL_ERROR "a backend's headers included above kernels/ "
                      "(use kernels/backend.h):\n  ${text}")
endif()
list(LENGTH sources n)
message(STATUS "include boundary holds over ${n} sources")
