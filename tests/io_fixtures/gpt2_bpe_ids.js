// Token ids of sample texts under the reference JavaScript GPT-2 encoder (npm gpt-3-encoder),
// independent of the Rust `tokenizers` crate. Regenerate with:
//   npm pack gpt-3-encoder && tar xzf gpt-3-encoder-*.tgz
//   node tests/io_fixtures/gpt2_bpe_ids.js ./package > tests/io_fixtures/gpt2_bpe_ids.json
const path = require('path');
const { encode } = require(path.resolve(process.argv[2], 'Encoder.js'));
const texts = [
  "Hello world",
  " Hello world",
  "Mix the two colors and output only one lowercase color name: red and blue is => ",
  "The opposite of 'hot' is ",
  "What category does this word belong to: 'banana'?",
  "Copy this sentence: 'The cat sat on the mat.'",
  "I'm sure they'll say we've done it, isn't it? You'd think so.",
  "  leading and   multiple    spaces\tand\ttabs\nand\n\nnewlines  ",
  "Numbers: 3.14159, 1,000,000 and 2025-12-08T10:00:00Z",
  "naïve café, Zürich, São Paulo, Ελληνικά, русский текст",
  "日本語のテキストと中文文本",
  "emoji: 😀🎉👍🏽 and a family 👨‍👩‍👧",
  "fn main() { println!(\"{}\", 1 + 2); } // code",
  "ALL CAPS AND MiXeD cAsE",
  "trailing space ",
  "\u0001\u0002 control \u007f chars",
];
process.stdout.write(JSON.stringify(texts.map(t => ({ text: t, ids: encode(t) })), null, 1) + "\n");
