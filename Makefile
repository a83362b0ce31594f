# RustyOnions-C: the two quick-start commands are `make run` and `make test`.
# Each build type has its own directory under build/.

GEN     := -G Ninja
CMAKE   := cmake
NPROC   := $(shell nproc)
RUN_ARGS ?=
FUZZ_SECONDS ?= 60

.PHONY: all deps release run test asan tsan test-tsan fuzz fuzz-build coverage bench lint clean help netns-test testssl

all: release

help:
	@echo "make run       install deps, build release, start a node on defaults"
	@echo "make test      install deps, build with ASan+UBSan, run every test (CTest)"
	@echo "make netns-test  (root) nodes in network namespaces with delay and loss"
	@echo "make tsan      build with ThreadSanitizer and run the threaded tests"
	@echo "make fuzz      build libFuzzer targets (clang) and run each FUZZ_SECONDS=$(FUZZ_SECONDS)"
	@echo "make coverage  build with gcov, run tests, write build/coverage/index.html"
	@echo "make bench     release build, run bench/*, write BENCHMARKS.md"
	@echo "make lint      cppcheck and clang-tidy (bugprone, cert) over src/"
	@echo "make testssl   testssl against a node's HTTPS and peer TLS (docs/runbooks/testssl.md)"
	@echo "make clean     remove build/"

deps:
	@scripts/deps.sh

release: deps
	@$(CMAKE) -S . -B build/release $(GEN) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@$(CMAKE) --build build/release

run: release
	./build/release/ron node $(RUN_ARGS)

asan: deps
	@$(CMAKE) -S . -B build/asan $(GEN) -DCMAKE_BUILD_TYPE=Debug -DRON_SANITIZE=address,undefined >/dev/null
	@$(CMAKE) --build build/asan

test: asan
	cd build/asan && ctest --output-on-failure -j$(NPROC) --timeout 900

netns-test: deps
	@$(CMAKE) -S . -B build/asan $(GEN) -DCMAKE_BUILD_TYPE=Debug -DRON_SANITIZE=address,undefined >/dev/null
	@$(CMAKE) --build build/asan --target ron ron-delayrelay
	@scripts/netns-test.sh build/asan

tsan: deps
	@$(CMAKE) -S . -B build/tsan $(GEN) -DCMAKE_BUILD_TYPE=Debug -DRON_SANITIZE=thread >/dev/null
	@$(CMAKE) --build build/tsan
	cd build/tsan && ctest --output-on-failure -j$(NPROC) -L threads

fuzz-build: deps
	@$(CMAKE) -S . -B build/fuzz $(GEN) -DCMAKE_BUILD_TYPE=Debug -DRON_FUZZ=ON \
		-DCMAKE_C_COMPILER=clang-14 >/dev/null
	@$(CMAKE) --build build/fuzz

fuzz: fuzz-build
	@scripts/fuzz.sh build/fuzz $(FUZZ_SECONDS)

coverage: deps
	@$(CMAKE) -S . -B build/coverage $(GEN) -DCMAKE_BUILD_TYPE=Debug -DRON_COVERAGE=ON >/dev/null
	@$(CMAKE) --build build/coverage
	cd build/coverage && ctest -j$(NPROC) --timeout 900 || true
	gcovr -r . --object-directory build/coverage --exclude tests --exclude bench --exclude 'src/.*/fuzz_.*' --exclude 'src/.*/bench_.*' \
		--html-details build/coverage/index.html --print-summary

lint: asan
	scripts/lint.sh --tidy build/asan

testssl: asan
	scripts/testssl.sh build/asan

bench: release
	@scripts/deps.sh --bench
	@bench/run-all.sh build/release

clean:
	rm -rf build
