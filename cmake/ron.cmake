# Build rules shared by every component: warnings, hardening, sanitizers,
# and the ron_component / ron_test / ron_fuzz / ron_script_test helpers.

add_compile_options(-Wall -Wextra -Werror -Wshadow -Wformat=2 -Wvla
                    -Wno-missing-field-initializers -fno-strict-aliasing)
add_compile_definitions(_GNU_SOURCE)

if(CMAKE_BUILD_TYPE STREQUAL "Release")
    add_compile_options(-O2 -D_FORTIFY_SOURCE=2 -fstack-protector-strong
                        -fstack-clash-protection -fcf-protection)
    add_link_options(-pie -Wl,-z,relro,-z,now -Wl,-z,noexecstack)
else()
    add_compile_options(-g -O1 -fno-omit-frame-pointer -fstack-protector-strong)
endif()

if(RON_SANITIZE)
    add_compile_options(-fsanitize=${RON_SANITIZE} -fno-sanitize-recover=all)
    add_link_options(-fsanitize=${RON_SANITIZE})
endif()
if(RON_COVERAGE)
    add_compile_options(--coverage -O0 -fprofile-update=atomic) # threads share counters
    add_link_options(--coverage)
endif()
if(RON_FUZZ)
    add_compile_options(-fsanitize=fuzzer-no-link,address,undefined)
    add_link_options(-fsanitize=address,undefined)
endif()

set(RON_CORPUS_DIR ${CMAKE_SOURCE_DIR}/tests/corpus)
find_program(RON_PYTHON python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT RON_PYTHON)
    find_program(RON_PYTHON python3 REQUIRED)
endif()

# ron_component(name SOURCES a.c b.c DEPENDS comp... LIBS extlib...)
# One static library per component folder; its folder is its include dir.
function(ron_component name)
    cmake_parse_arguments(C "" "" "SOURCES;DEPENDS;LIBS" ${ARGN})
    add_library(${name} STATIC ${C_SOURCES})
    target_include_directories(${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
    if(NOT name STREQUAL "common")
        target_link_libraries(${name} PUBLIC common)
    endif()
    target_link_libraries(${name} PUBLIC ${C_DEPENDS} ${C_LIBS})
    set_property(GLOBAL APPEND PROPERTY RON_COMPONENTS ${name})
endfunction()

# ron_test(comp [SOURCES extra.c] [LIBS ...] [LABELS ...])
# tests/test_<comp-with-underscores>.c linked against the component and cmocka.
function(ron_test comp)
    cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
    string(REPLACE "-" "_" base ${comp})
    set(exe test_${base})
    add_executable(${exe} ${CMAKE_SOURCE_DIR}/tests/test_${base}.c ${T_SOURCES})
    target_include_directories(${exe} PRIVATE ${CMAKE_SOURCE_DIR}/tests ${CMAKE_CURRENT_SOURCE_DIR})
    target_link_libraries(${exe} PRIVATE ${comp} PkgConfig::CMOCKA ${T_LIBS})
    add_test(NAME ${exe} COMMAND ${exe})
    if(NOT T_TIMEOUT)
        set(T_TIMEOUT 300)
    endif()
    set_tests_properties(${exe} PROPERTIES LABELS "${comp};unit;${T_LABELS}" TIMEOUT ${T_TIMEOUT}
        ENVIRONMENT "RON_SOURCE_DIR=${CMAKE_SOURCE_DIR};RON_BINARY_DIR=${CMAKE_BINARY_DIR}")
endfunction()

# ron_fuzz(name COMPONENT comp): src/<comp>/fuzz_<name>.c.
# With RON_FUZZ it is a libFuzzer binary; otherwise a replay driver runs the
# committed corpus tests/corpus/<name>/ as a CTest entry.
function(ron_fuzz name)
    cmake_parse_arguments(F "" "COMPONENT" "" ${ARGN})
    set(exe fuzz_${name})
    if(RON_FUZZ)
        add_executable(${exe} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_${name}.c)
        target_link_options(${exe} PRIVATE -fsanitize=fuzzer)
        target_link_libraries(${exe} PRIVATE ${F_COMPONENT})
        set_target_properties(${exe} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
    else()
        add_executable(${exe} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_${name}.c
                       ${CMAKE_SOURCE_DIR}/tests/fuzz_replay.c)
        target_link_libraries(${exe} PRIVATE ${F_COMPONENT})
        add_test(NAME ${exe} COMMAND ${exe} ${RON_CORPUS_DIR}/${name})
        set_tests_properties(${exe} PROPERTIES LABELS "${F_COMPONENT};fuzz" TIMEOUT 300)
    endif()
endfunction()

# ron_script_test(name script [LABELS ...] [TIMEOUT s]): an integration test
# run by a script (python3 or sh) with the built `ron` binary in RON_BIN.
function(ron_script_test name script)
    cmake_parse_arguments(S "" "TIMEOUT" "LABELS" ${ARGN})
    if(NOT S_TIMEOUT)
        set(S_TIMEOUT 300)
    endif()
    if(script MATCHES "\\.py$")
        # Debian's interpreter, whose modules come from deps/debian-packages.txt.
        add_test(NAME ${name} COMMAND ${RON_PYTHON} ${script})
    else()
        add_test(NAME ${name} COMMAND ${script})
    endif()
    set_tests_properties(${name} PROPERTIES LABELS "integration;${S_LABELS}" TIMEOUT ${S_TIMEOUT}
        ENVIRONMENT "RON_BIN=$<TARGET_FILE:ron>;RON_SOURCE_DIR=${CMAKE_SOURCE_DIR};RON_BINARY_DIR=${CMAKE_BINARY_DIR}")
endfunction()

# Version, commit and build type for /version and `ron --version`.
function(ron_build_info)
    execute_process(COMMAND git rev-parse --short=12 HEAD WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
                    OUTPUT_VARIABLE RON_GIT_COMMIT OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(NOT RON_GIT_COMMIT)
        set(RON_GIT_COMMIT "unknown")
    endif()
    if(RON_SANITIZE)
        set(RON_BUILD_TYPE "${CMAKE_BUILD_TYPE}+${RON_SANITIZE}")
    elseif(RON_COVERAGE)
        set(RON_BUILD_TYPE "coverage")
    else()
        string(TOLOWER "${CMAKE_BUILD_TYPE}" RON_BUILD_TYPE)
    endif()
    set(RON_VERSION ${PROJECT_VERSION})
    configure_file(${CMAKE_SOURCE_DIR}/cmake/ron_build_info.h.in
                   ${CMAKE_BINARY_DIR}/generated/ron_build_info.h @ONLY)
endfunction()
