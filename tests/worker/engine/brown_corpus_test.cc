#include "worker/engine/brown_corpus.h"

#include <fstream>

#include <gtest/gtest.h>

#include "tests/worker/engine/test_models.h"

namespace dtm {
namespace {

TEST(BrownCorpusTest, DetokenizesTaggedSentences) {
  EXPECT_EQ(DetokenizeTaggedSentence(
                "\tThe/at Fulton/np-tl County/nn-tl said/vbd ``/`` no/at evidence/nn ''/'' that/cs any/dti "
                "irregularities/nns took/vbd place/nn ./."),
            "The Fulton County said \"no evidence\" that any irregularities took place.");
  EXPECT_EQ(DetokenizeTaggedSentence("the/at City/nn-tl ,/, which/wdt (/( if/cs any/dti )/) won't/md* ;/."),
            "the City, which (if any) won't;");
  EXPECT_EQ(DetokenizeTaggedSentence("   "), "");
  // A word that holds a slash keeps it: only the last slash starts the tag.
  EXPECT_EQ(DetokenizeTaggedSentence("1/2/cd"), "1/2");
}

TEST(BrownCorpusTest, ReadsDocumentsInFileNameOrder) {
  testing::TempDir dir;
  std::ofstream(dir.File("cb01")) << "\n\n\tSecond/ap ./.\n";
  std::ofstream(dir.File("ca01")) << "\n\n\tFirst/od one/cd ./.\n\n\tAgain/rb ./.\n";
  std::ofstream(dir.File("README")) << "not a corpus file";
  StatusOr<std::vector<BrownDocument>> docs = ReadBrownCorpus(dir.path());
  ASSERT_TRUE(docs.ok()) << docs.status().ToString();
  ASSERT_EQ(docs->size(), 2u);
  EXPECT_EQ((*docs)[0].name, "ca01");
  EXPECT_EQ((*docs)[0].sentences, (std::vector<std::string>{"First one.", "Again."}));
  EXPECT_EQ(BrownToPlainText(*docs), "First one.\nAgain.\n\nSecond.\n\n");
}

TEST(BrownCorpusTest, NamesTheFolderWhenItHoldsNoCorpus) {
  testing::TempDir dir;
  StatusOr<std::vector<BrownDocument>> docs = ReadBrownCorpus(dir.path());
  ASSERT_FALSE(docs.ok());
  EXPECT_NE(docs.status().message().find(dir.path()), std::string::npos);
  EXPECT_FALSE(ReadBrownCorpus(dir.File("missing")).ok());
}

}  // namespace
}  // namespace dtm
