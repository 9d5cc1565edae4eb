//! A model API call (OpenAI, Anthropic, Gemini, Ollama): its request and one or streamed answer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::protocols::genai::fuzzing::exchange(data));
