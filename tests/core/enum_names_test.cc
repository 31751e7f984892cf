#include "core/enum_names.h"

#include <string>

#include "gtest/gtest.h"

namespace retort {
namespace {

enum class Fruit { kApple, kPear, kPlum, kFig };

constexpr EnumName<Fruit> kFruits[] = {
    {"apple", Fruit::kApple}, {"pear", Fruit::kPear}, {"plum", Fruit::kPlum}};
constexpr EnumName<Fruit> kOne[] = {{"apple", Fruit::kApple}};
constexpr EnumName<Fruit> kTwo[] = {{"apple", Fruit::kApple}, {"pear", Fruit::kPear}};

TEST(EnumNamesTest, FindsExactNamesOnly) {
  EXPECT_EQ(FindEnumByName(kFruits, "pear"), Fruit::kPear);
  EXPECT_EQ(FindEnumByName(kFruits, "plum"), Fruit::kPlum);
  EXPECT_EQ(FindEnumByName(kFruits, "Pear"), std::nullopt);
  EXPECT_EQ(FindEnumByName(kFruits, "pea"), std::nullopt);
  EXPECT_EQ(FindEnumByName(kFruits, ""), std::nullopt);
}

TEST(EnumNamesTest, NamesValuesAndUnlistedOnes) {
  EXPECT_STREQ(EnumValueName(kFruits, Fruit::kApple), "apple");
  EXPECT_STREQ(EnumValueName(kFruits, Fruit::kPlum), "plum");
  EXPECT_STREQ(EnumValueName(kFruits, Fruit::kFig), "?");
  EXPECT_STREQ(EnumValueName(kFruits, Fruit::kFig, "unknown"), "unknown");
}

TEST(EnumNamesTest, ListsChoicesAsAMessageDoes) {
  EXPECT_EQ(EnumNameChoices(kOne), "apple");
  EXPECT_EQ(EnumNameChoices(kTwo), "apple or pear");
  EXPECT_EQ(EnumNameChoices(kFruits), "apple, pear or plum");
}

TEST(EnumNamesTest, ParseNamesWhatAndTheChoicesOnError) {
  absl::StatusOr<Fruit> f = ParseEnumName(kFruits, "fruit", "plum");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*f, Fruit::kPlum);
  absl::StatusOr<Fruit> bad = ParseEnumName(kFruits, "fruit", "fig");
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
  EXPECT_EQ(bad.status().message(), "fruit \"fig\": expected apple, pear or plum");
}

}  // namespace
}  // namespace retort
