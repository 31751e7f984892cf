#include "core/named_values.h"

#include "gtest/gtest.h"

namespace retort {
namespace {

enum class Fruit { kApple, kPear, kPlum, kFig };

constexpr NamedValue<Fruit> kFruits[] = {
    {Fruit::kApple, "apple"}, {Fruit::kPear, "pear"}, {Fruit::kPlum, "plum"}};

TEST(NamedValues, FindsEachNameExactly) {
  EXPECT_EQ(FindNamedValue(kFruits, "apple"), Fruit::kApple);
  EXPECT_EQ(FindNamedValue(kFruits, "plum"), Fruit::kPlum);
  EXPECT_EQ(FindNamedValue(kFruits, "Plum"), std::nullopt);
  EXPECT_EQ(FindNamedValue(kFruits, "plu"), std::nullopt);
  EXPECT_EQ(FindNamedValue(kFruits, ""), std::nullopt);
}

TEST(NamedValues, NamesEachValueAndMarksMissingOnes) {
  EXPECT_STREQ(NameOfValue(kFruits, Fruit::kPear), "pear");
  EXPECT_STREQ(NameOfValue(kFruits, Fruit::kFig), "?");
  EXPECT_EQ(NameOfValue(kFruits, Fruit::kFig, nullptr), nullptr);
}

TEST(NamedValues, ListsNamesAsASentence) {
  constexpr NamedValue<Fruit> one[] = {{Fruit::kFig, "fig"}};
  constexpr NamedValue<Fruit> two[] = {{Fruit::kFig, "fig"}, {Fruit::kPear, "pear"}};
  EXPECT_EQ(NamesOf(one), "fig");
  EXPECT_EQ(NamesOf(two), "fig or pear");
  EXPECT_EQ(NamesOf(kFruits), "apple, pear or plum");
}

TEST(NamedValues, ParseNamesTheUnknownValueAndTheChoices) {
  EXPECT_EQ(*ParseNamedValue(kFruits, "pear", "fruit"), Fruit::kPear);
  const absl::StatusOr<Fruit> bad = ParseNamedValue(kFruits, "kiwi", "fruit");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "unknown fruit \"kiwi\" (expected apple, pear or plum)");
}

}  // namespace
}  // namespace retort
