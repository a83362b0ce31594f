# BLAKE3: a system libblake3 when pkg-config finds one; otherwise the official
# C implementation with its x86-64 assembly, compiled from the sources Debian
# ships in librust-blake3-dev. Target: blake3 (header blake3.h; the internal
# blake3_impl.h is available only in the vendored-source build).
pkg_check_modules(SYS_BLAKE3 QUIET IMPORTED_TARGET libblake3)
if(SYS_BLAKE3_FOUND)
    add_library(blake3 INTERFACE)
    target_link_libraries(blake3 INTERFACE PkgConfig::SYS_BLAKE3)
    set(RON_BLAKE3_SOURCE "system libblake3 ${SYS_BLAKE3_VERSION}")
    return()
endif()

file(GLOB _b3dirs LIST_DIRECTORIES true /usr/share/cargo/registry/blake3-*/c)
list(SORT _b3dirs COMPARE NATURAL ORDER DESCENDING)
list(GET _b3dirs 0 BLAKE3_C_DIR)
if(NOT EXISTS ${BLAKE3_C_DIR}/blake3.c)
    message(FATAL_ERROR "BLAKE3 C sources not found: install librust-blake3-dev (make deps)")
endif()
string(REGEX MATCH "blake3-([0-9.]+)" _m ${BLAKE3_C_DIR})
set(RON_BLAKE3_SOURCE "BLAKE3 ${CMAKE_MATCH_1} C (librust-blake3-dev)")
set(_b3 ${BLAKE3_C_DIR})
add_library(blake3 STATIC
    ${_b3}/blake3.c ${_b3}/blake3_dispatch.c ${_b3}/blake3_portable.c
    ${_b3}/blake3_sse2_x86-64_unix.S ${_b3}/blake3_sse41_x86-64_unix.S
    ${_b3}/blake3_avx2_x86-64_unix.S ${_b3}/blake3_avx512_x86-64_unix.S)
# Upstream code: keep our -Werror and sanitizers off its warnings, not its bugs.
target_compile_options(blake3 PRIVATE -w)
target_include_directories(blake3 SYSTEM PUBLIC ${_b3})
set(RON_BLAKE3_VENDORED ON)
