#!/usr/bin/env python3
"""Build the general-knowledge forgetting-check set (stdlib only, deterministic).

Writes mcq.jsonl and prose.jsonl next to this file. All content is original.
Each MCQ item is written as (question, correct, [three distractors]); the
correct answer's position is assigned so that every subject uses positions
0-3 as evenly as possible, then shuffled with a fixed seed.

Run:  python data/general/build.py
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 1234

SCIENCE = [
    ("What is the boiling point of water at sea level in degrees Celsius?", "100", ["50", "0", "212"]),
    ("What is the freezing point of water in degrees Celsius?", "0", ["100", "10", "-50"]),
    ("At what temperature in degrees Fahrenheit does water freeze?", "32", ["0", "100", "212"]),
    ("What gas do plants take in from the air to make their food?", "Carbon dioxide", ["Oxygen", "Helium", "Hydrogen"]),
    ("What gas do humans need to breathe in to stay alive?", "Oxygen", ["Carbon dioxide", "Helium", "Neon"]),
    ("Which planet is closest to the Sun?", "Mercury", ["Venus", "Mars", "Jupiter"]),
    ("What is the largest planet in our solar system?", "Jupiter", ["Earth", "Mars", "Mercury"]),
    ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Saturn", "Neptune"]),
    ("Which planet is most famous for its large, bright rings?", "Saturn", ["Mercury", "Mars", "Venus"]),
    ("What force pulls objects toward the ground?", "Gravity", ["Magnetism", "Friction", "Sound"]),
    ("How many legs does an insect have?", "Six", ["Eight", "Four", "Ten"]),
    ("How many legs does a spider have?", "Eight", ["Six", "Four", "Ten"]),
    ("Which organ pumps blood around the human body?", "The heart", ["The liver", "The lungs", "The stomach"]),
    ("Which organs do humans use to breathe?", "The lungs", ["The liver", "The kidneys", "The stomach"]),
    ("What is the chemical formula for water?", "H2O", ["CO2", "O2", "NaCl"]),
    ("What is the chemical symbol for gold?", "Au", ["Ag", "Go", "Gd"]),
    ("What is the center of an atom called?", "The nucleus", ["The electron", "The shell", "The orbit"]),
    ("Which part of a plant takes up water from the soil?", "The roots", ["The flowers", "The petals", "The seeds"]),
    ("What is the hardest natural substance?", "Diamond", ["Gold", "Iron", "Chalk"]),
    ("What do bees collect from flowers to make honey?", "Nectar", ["Sand", "Bark", "Soil"]),
    ("What star is at the center of our solar system?", "The Sun", ["The Moon", "Polaris", "Sirius"]),
    ("What natural satellite orbits the Earth?", "The Moon", ["The Sun", "Mars", "Venus"]),
    ("What kind of animal is a frog?", "An amphibian", ["A mammal", "A reptile", "A bird"]),
    ("What kind of animal is a whale?", "A mammal", ["A fish", "A reptile", "An amphibian"]),
    (
        "What process do green plants use to make food from sunlight?",
        "Photosynthesis",
        ["Digestion", "Evaporation", "Erosion"],
    ),
    ("Which gas makes up most of Earth's atmosphere?", "Nitrogen", ["Oxygen", "Carbon dioxide", "Argon"]),
    ("In what state of matter is water when it is ice?", "Solid", ["Liquid", "Gas", "Plasma"]),
    (
        "When water vapor cools and turns into liquid, what is this called?",
        "Condensation",
        ["Evaporation", "Melting", "Freezing"],
    ),
    (
        "Which cells in the blood carry oxygen around the body?",
        "Red blood cells",
        ["White blood cells", "Nerve cells", "Skin cells"],
    ),
    ("How many bones are in the adult human body?", "206", ["106", "306", "52"]),
    (
        "About how fast does light travel in a vacuum?",
        "300,000 km per second",
        ["300 km per second", "3,000 km per second", "30 km per second"],
    ),
    ("What are animals that eat only plants called?", "Herbivores", ["Carnivores", "Omnivores", "Predators"]),
    ("What are animals that eat only meat called?", "Carnivores", ["Herbivores", "Omnivores", "Producers"]),
    ("Which of these metals is strongly attracted to a magnet?", "Iron", ["Copper", "Aluminium", "Gold"]),
    ("Which sense organ is used for hearing?", "The ear", ["The eye", "The nose", "The tongue"]),
    ("What is the unit of electric current?", "Ampere", ["Kilogram", "Meter", "Second"]),
    ("Which blood vessels carry blood away from the heart?", "Arteries", ["Veins", "Nerves", "Tendons"]),
    (
        "What is it called when a caterpillar changes into a butterfly?",
        "Metamorphosis",
        ["Photosynthesis", "Evaporation", "Migration"],
    ),
]

HISTORY = [
    (
        "Who was the first President of the United States?",
        "George Washington",
        ["Abraham Lincoln", "Thomas Jefferson", "Theodore Roosevelt"],
    ),
    (
        "Who was the 16th President of the United States?",
        "Abraham Lincoln",
        ["George Washington", "Theodore Roosevelt", "Ulysses S. Grant"],
    ),
    ("In which year did World War II end?", "1945", ["1918", "1939", "1965"]),
    ("In which year did World War I begin?", "1914", ["1939", "1905", "1920"]),
    (
        "Which ancient civilization built the pyramids of Giza?",
        "The Egyptians",
        ["The Romans", "The Vikings", "The Aztecs"],
    ),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong", ["Yuri Gagarin", "Buzz Aldrin", "John Glenn"]),
    ("In which year did humans first land on the Moon?", "1969", ["1959", "1979", "1989"]),
    ("Who was the first person to travel into space?", "Yuri Gagarin", ["Neil Armstrong", "Buzz Aldrin", "John Glenn"]),
    (
        "Which passenger ship sank after hitting an iceberg in 1912?",
        "The Titanic",
        ["The Mayflower", "The Bismarck", "The Beagle"],
    ),
    (
        "Who was the main author of the US Declaration of Independence?",
        "Thomas Jefferson",
        ["George Washington", "Abraham Lincoln", "John Adams"],
    ),
    ("The Great Wall was built to protect the northern border of which country?", "China", ["Japan", "India", "Egypt"]),
    (
        "Julius Caesar was a famous leader of which ancient civilization?",
        "Ancient Rome",
        ["Ancient Egypt", "Ancient China", "Ancient Persia"],
    ),
    (
        "Who was the British Prime Minister for most of World War II?",
        "Winston Churchill",
        ["Margaret Thatcher", "Tony Blair", "David Lloyd George"],
    ),
    (
        "Which naturalist published On the Origin of Species in 1859?",
        "Charles Darwin",
        ["Isaac Newton", "Albert Einstein", "Galileo Galilei"],
    ),
    ("In which year did Christopher Columbus first reach the Americas?", "1492", ["1066", "1776", "1812"]),
    ("In which year did the United States declare independence?", "1776", ["1492", "1812", "1865"]),
    (
        "Who is usually credited with inventing the telephone?",
        "Alexander Graham Bell",
        ["Thomas Edison", "Isaac Newton", "Henry Ford"],
    ),
    (
        "Which American inventor is famous for a practical electric light bulb?",
        "Thomas Edison",
        ["Alexander Graham Bell", "Charles Darwin", "Henry Ford"],
    ),
    ("In which year did the Berlin Wall fall?", "1989", ["1945", "1961", "2001"]),
    (
        "Who led India's independence movement using nonviolent protest?",
        "Mahatma Gandhi",
        ["Nelson Mandela", "Winston Churchill", "Napoleon Bonaparte"],
    ),
    (
        "Who became South Africa's first Black president in 1994?",
        "Nelson Mandela",
        ["Desmond Tutu", "Kofi Annan", "Mahatma Gandhi"],
    ),
    ("Which South American civilization built Machu Picchu?", "The Inca", ["The Romans", "The Vikings", "The Greeks"]),
    ("Which queen reigned over the United Kingdom from 1952 to 2022?", "Elizabeth II", ["Victoria", "Mary I", "Anne"]),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", ["Pablo Picasso", "Vincent van Gogh", "Claude Monet"]),
    (
        "Which seafaring raiders from Scandinavia sailed in longships?",
        "The Vikings",
        ["The Romans", "The Incas", "The Egyptians"],
    ),
    (
        "Who was the first woman to win a Nobel Prize?",
        "Marie Curie",
        ["Florence Nightingale", "Rosa Parks", "Jane Austen"],
    ),
    (
        "Which nurse became famous for caring for soldiers in the Crimean War?",
        "Florence Nightingale",
        ["Marie Curie", "Queen Victoria", "Joan of Arc"],
    ),
    (
        "Which war was fought between the northern and southern US states from 1861 to 1865?",
        "The American Civil War",
        ["World War I", "The Korean War", "The Vietnam War"],
    ),
    ("Which ancient Greek city is famous as the birthplace of democracy?", "Athens", ["Sparta", "Troy", "Carthage"]),
    (
        "Which French general crowned himself emperor in 1804?",
        "Napoleon Bonaparte",
        ["Louis XIV", "Charles de Gaulle", "Julius Caesar"],
    ),
    ("Which country gave the Statue of Liberty to the United States?", "France", ["England", "Spain", "Italy"]),
    (
        "What was the name of the ship that carried the Pilgrims to America in 1620?",
        "The Mayflower",
        ["The Titanic", "The Beagle", "The Bismarck"],
    ),
    ("In which country did the Industrial Revolution begin?", "Great Britain", ["China", "Brazil", "Egypt"]),
    (
        "In the three-age system, which age came right after the Stone Age?",
        "The Bronze Age",
        ["The Iron Age", "The Space Age", "The Ice Age"],
    ),
    (
        "Which young Egyptian pharaoh's tomb was discovered in 1922?",
        "Tutankhamun",
        ["Ramesses II", "Cleopatra", "Julius Caesar"],
    ),
    ("In which city was President John F. Kennedy assassinated in 1963?", "Dallas", ["New York", "Chicago", "Boston"]),
    (
        "Who wrote the plays Romeo and Juliet and Hamlet?",
        "William Shakespeare",
        ["Charles Dickens", "Jane Austen", "Mark Twain"],
    ),
    (
        "Which empire was ruled from the city of Rome and built roads across Europe?",
        "The Roman Empire",
        ["The Aztec Empire", "The Mongol Empire", "The Inca Empire"],
    ),
]

GEOGRAPHY = [
    ("What is the capital of France?", "Paris", ["Lyon", "Marseille", "Nice"]),
    ("What is the capital of Japan?", "Tokyo", ["Osaka", "Kyoto", "Seoul"]),
    ("What is the capital of Italy?", "Rome", ["Milan", "Venice", "Naples"]),
    ("What is the capital of Australia?", "Canberra", ["Sydney", "Melbourne", "Perth"]),
    ("What is the capital of Canada?", "Ottawa", ["Toronto", "Vancouver", "Montreal"]),
    ("What is the capital of Spain?", "Madrid", ["Barcelona", "Seville", "Lisbon"]),
    ("What is the capital of Germany?", "Berlin", ["Munich", "Hamburg", "Vienna"]),
    ("What is the capital of the United States?", "Washington, D.C.", ["New York City", "Los Angeles", "Chicago"]),
    ("What is the capital of China?", "Beijing", ["Shanghai", "Hong Kong", "Shenzhen"]),
    ("What is the capital of Russia?", "Moscow", ["Saint Petersburg", "Kyiv", "Minsk"]),
    ("What is the capital of the United Kingdom?", "London", ["Manchester", "Edinburgh", "Dublin"]),
    ("What is the capital of Greece?", "Athens", ["Thessaloniki", "Sparta", "Rome"]),
    ("What is the capital of Kenya?", "Nairobi", ["Mombasa", "Lagos", "Addis Ababa"]),
    (
        "What is the largest ocean on Earth?",
        "The Pacific Ocean",
        ["The Atlantic Ocean", "The Indian Ocean", "The Arctic Ocean"],
    ),
    (
        "Which ocean lies between Europe and North America?",
        "The Atlantic Ocean",
        ["The Pacific Ocean", "The Indian Ocean", "The Southern Ocean"],
    ),
    ("What is the longest river in Africa?", "The Nile", ["The Congo", "The Niger", "The Zambezi"]),
    ("What is the longest river in South America?", "The Amazon", ["The Orinoco", "The Parana", "The Mississippi"]),
    ("On which continent is Egypt mostly located?", "Africa", ["Asia", "Europe", "South America"]),
    ("Which is the largest continent by area?", "Asia", ["Africa", "Europe", "Australia"]),
    ("Which is the smallest continent by area?", "Australia", ["Europe", "Antarctica", "South America"]),
    ("What is the coldest continent on Earth?", "Antarctica", ["Europe", "Asia", "North America"]),
    ("How many continents are there in the usual count?", "Seven", ["Four", "Nine", "Twelve"]),
    ("Which country has the largest population in South America?", "Brazil", ["Argentina", "Peru", "Chile"]),
    (
        "What is the tallest mountain in the world above sea level?",
        "Mount Everest",
        ["Kilimanjaro", "Mont Blanc", "Mount Fuji"],
    ),
    ("What is the largest hot desert in the world?", "The Sahara", ["The Gobi", "The Kalahari", "The Mojave"]),
    ("In which country is the city of Cairo?", "Egypt", ["Morocco", "Kenya", "Turkey"]),
    ("In which country is the city of Mumbai?", "India", ["Pakistan", "Bangladesh", "Sri Lanka"]),
    ("In which country is the city of Toronto?", "Canada", ["United States", "Australia", "England"]),
    ("Which river flows through London?", "The Thames", ["The Seine", "The Danube", "The Rhine"]),
    ("Which river flows through Paris?", "The Seine", ["The Thames", "The Tiber", "The Volga"]),
    ("Which is the largest country in the world by area?", "Russia", ["Canada", "China", "Brazil"]),
    ("In which country is Mount Kilimanjaro?", "Tanzania", ["Kenya", "Nigeria", "Egypt"]),
    ("Which European country is shaped like a boot?", "Italy", ["Spain", "Greece", "Portugal"]),
    (
        "Which imaginary line divides the Earth into northern and southern halves?",
        "The equator",
        ["The prime meridian", "The Tropic of Cancer", "The Arctic Circle"],
    ),
    (
        "Which US state is made up entirely of islands in the Pacific Ocean?",
        "Hawaii",
        ["Alaska", "Florida", "California"],
    ),
    (
        "Which sea lies between southern Europe and northern Africa?",
        "The Mediterranean Sea",
        ["The Red Sea", "The Caribbean Sea", "The Baltic Sea"],
    ),
    ("Which country lies directly north of the United States?", "Canada", ["Mexico", "Cuba", "Brazil"]),
    ("Most of the Amazon rainforest lies in which country?", "Brazil", ["Mexico", "Chile", "Argentina"]),
]

# Arithmetic: (question, expression checked with eval or None, correct, distractors)
ARITHMETIC = [
    ("What is 7 times 8?", "7*8", "56", ["54", "63", "48"]),
    ("What is 6 times 7?", "6*7", "42", ["36", "48", "49"]),
    ("What is 9 times 9?", "9*9", "81", ["72", "90", "99"]),
    ("What is 12 times 12?", "12*12", "144", ["124", "122", "164"]),
    ("What is 3 times 4?", "3*4", "12", ["7", "14", "16"]),
    ("What is 8 times 5?", "8*5", "40", ["35", "45", "13"]),
    ("What is 4 times 9?", "4*9", "36", ["32", "45", "27"]),
    ("What is 11 times 11?", "11*11", "121", ["111", "122", "101"]),
    ("What is 25 times 4?", "25*4", "100", ["29", "80", "125"]),
    ("What is 5 plus 8?", "5+8", "13", ["12", "14", "15"]),
    ("What is 9 plus 6?", "9+6", "15", ["14", "16", "13"]),
    ("What is 15 plus 27?", "15+27", "42", ["32", "41", "52"]),
    ("What is 13 plus 19?", "13+19", "32", ["31", "22", "33"]),
    ("What is 45 plus 55?", "45+55", "100", ["90", "110", "105"]),
    ("What is 300 plus 400?", "300+400", "700", ["600", "800", "340"]),
    ("What is 7 plus 7 plus 7?", "7+7+7", "21", ["14", "28", "777"]),
    ("What is 100 minus 37?", "100-37", "63", ["73", "67", "53"]),
    ("What is 20 minus 8?", "20-8", "12", ["28", "10", "14"]),
    ("What is 50 minus 25?", "50-25", "25", ["35", "15", "30"]),
    ("What is 9 minus 4?", "9-4", "5", ["4", "6", "13"]),
    ("What is 1000 minus 1?", "1000-1", "999", ["990", "900", "1001"]),
    ("What is 56 divided by 7?", "56//7", "8", ["7", "9", "6"]),
    ("What is 81 divided by 9?", "81//9", "9", ["8", "7", "11"]),
    ("What is 64 divided by 8?", "64//8", "8", ["6", "16", "9"]),
    ("What is 72 divided by 8?", "72//8", "9", ["8", "7", "6"]),
    ("What is 18 divided by 3?", "18//3", "6", ["5", "9", "3"]),
    ("What is half of 50?", "50//2", "25", ["20", "100", "30"]),
    ("What is double 16?", "16*2", "32", ["18", "26", "36"]),
    ("What is 10 percent of 200?", "200*10//100", "20", ["2", "10", "100"]),
    ("What is the square root of 49?", "7", "7", ["6", "8", "9"]),
    ("What is 2 to the power of 3?", "2**3", "8", ["6", "9", "5"]),
    ("How many minutes are there in two hours?", "2*60", "120", ["100", "60", "200"]),
    ("How many centimeters are there in one meter?", "100", "100", ["10", "1000", "12"]),
    ("How many sides does a hexagon have?", "6", "6", ["5", "8", "7"]),
    ("What is 3/4 written as a decimal?", None, "0.75", ["0.34", "0.43", "0.25"]),
    ("What is one half plus one quarter?", None, "three quarters", ["two sixths", "one sixth", "one quarter"]),
    ("What number comes next: 2, 4, 6, 8, ...?", "8+2", "10", ["9", "12", "16"]),
    ("What is the perimeter of a square with sides of 5 cm?", "4*5", "20 cm", ["25 cm", "10 cm", "15 cm"]),
    (
        "What is the area of a rectangle 3 cm wide and 4 cm long?",
        "3*4",
        "12 square cm",
        ["7 square cm", "14 square cm", "24 square cm"],
    ),
]

LANGUAGE = [
    ('Which word is a synonym of "happy"?', "joyful", ["sad", "angry", "tired"]),
    ('Which word is a synonym of "begin"?', "start", ["finish", "stop", "wait"]),
    ('Which word is a synonym of "large"?', "big", ["tiny", "thin", "short"]),
    ('Which word means the same as "quick"?', "fast", ["slow", "heavy", "quiet"]),
    ('Which word is the opposite of "hot"?', "cold", ["warm", "bright", "loud"]),
    ('Which word is the opposite of "big"?', "small", ["huge", "tall", "wide"]),
    ('Which word is the opposite of "early"?', "late", ["soon", "first", "quick"]),
    ('Which word is the opposite of "remember"?', "forget", ["recall", "think", "learn"]),
    ('Which word is the opposite of "full"?', "empty", ["heavy", "round", "whole"]),
    ('Which word is the opposite of "brave"?', "cowardly", ["bold", "strong", "proud"]),
    ('What is the plural of "child"?', "children", ["childs", "childes", "childrens"]),
    ('What is the plural of "mouse"?', "mice", ["mouses", "meese", "mousen"]),
    ('What is the plural of "tooth"?', "teeth", ["tooths", "teeths", "toothes"]),
    ('What is the plural of "foot"?', "feet", ["foots", "feets", "footes"]),
    ('What is the plural of "box"?', "boxes", ["boxs", "boxen", "boxies"]),
    ('What is the plural of "sheep"?', "sheep", ["sheeps", "sheepes", "shoop"]),
    ('What is the past tense of "go"?', "went", ["goed", "goes", "going"]),
    ('What is the past tense of "eat"?', "ate", ["eated", "eats", "eating"]),
    ('What is the past tense of "write"?', "wrote", ["writed", "writes", "writing"]),
    ('What is the comparative form of "good"?', "better", ["gooder", "best", "goodest"]),
    ('What is the superlative form of "bad"?', "worst", ["baddest", "worse", "badder"]),
    ('Which word is the noun in "The dog barked loudly"?', "dog", ["barked", "loudly", "the"]),
    ('Which word is the verb in "She sings every morning"?', "sings", ["she", "every", "morning"]),
    ('Which word is the adjective in "The red car stopped"?', "red", ["car", "stopped", "the"]),
    ('Which word is the adverb in "He ran quickly to school"?', "quickly", ["ran", "school", "he"]),
    ("Which of these words is a pronoun?", "they", ["quickly", "green", "table"]),
    ('Which word correctly completes "She ___ to school every day"?', "goes", ["go", "going", "gone"]),
    ('Which word correctly completes "They ___ playing football now"?', "are", ["is", "am", "was"]),
    ("Which spelling is correct?", "necessary", ["neccessary", "necesary", "neccesary"]),
    ("Which of these words is spelled correctly?", "beautiful", ["beutiful", "beautifull", "beatiful"]),
    ('What does the word "enormous" mean?', "very large", ["very small", "very fast", "very quiet"]),
    ('What does the word "ancient" mean?', "very old", ["very new", "very loud", "very cheap"]),
    ('What does the word "fragile" mean?', "easily broken", ["very heavy", "very bright", "full of water"]),
    ("What is a young dog called?", "a puppy", ["a kitten", "a calf", "a foal"]),
    ("What is a young cat called?", "a kitten", ["a puppy", "a cub", "a lamb"]),
    ('Which word rhymes with "cat"?', "hat", ["dog", "cup", "sun"]),
    ("Which punctuation mark ends a direct question?", "a question mark", ["a comma", "a colon", "an apostrophe"]),
    (
        "What is a word with the opposite meaning of another word called?",
        "an antonym",
        ["a synonym", "a homophone", "a pronoun"],
    ),
    ("What is a word with the same meaning as another word called?", "a synonym", ["an antonym", "a verb", "a prefix"]),
    ("What is a person who writes books called?", "an author", ["a pilot", "a baker", "a farmer"]),
]

PROSE = [
    (
        "weather",
        """Weather is the state of the atmosphere at a particular place and time. It includes the temperature, the amount of cloud, the wind, the humidity and any rain or snow that is falling. Weather changes from hour to hour and from day to day, while climate describes the typical pattern of weather in a region over many years. Most weather happens in the lowest layer of the atmosphere, called the troposphere. The main driver of weather is the Sun, which heats the Earth unevenly. Air near the equator is warmed more than air near the poles, and land heats up and cools down faster than the sea. Warm air rises because it is less dense, and cooler air moves in to take its place, creating wind. As rising air cools, the water vapor it carries condenses into tiny droplets that form clouds. Meteorologists measure air pressure, temperature and wind at thousands of stations, and they use computer models to forecast what the weather will do over the next few days.""",
    ),
    (
        "water cycle",
        """The water cycle describes how water moves continuously between the oceans, the air and the land. The Sun warms the surface of seas, lakes and rivers, and some of the water evaporates, becoming an invisible gas called water vapor. Plants also release water vapor through tiny pores in their leaves, a process known as transpiration. As the moist air rises, it cools, and the vapor condenses around specks of dust to form clouds. When the droplets in a cloud join together and grow heavy enough, they fall as precipitation, which may be rain, snow, sleet or hail depending on the temperature. Some of this water runs over the ground into streams and rivers and eventually returns to the sea. Some soaks into the soil and collects underground as groundwater, which can feed wells and springs for many years. In cold regions, water may be stored as ice in glaciers for centuries before it melts. The total amount of water on Earth stays almost the same; it simply changes form and place.""",
    ),
    (
        "photosynthesis",
        """Photosynthesis is the process by which green plants, algae and some bacteria make their own food using the energy of sunlight. It takes place mainly in the leaves, inside small structures called chloroplasts. These contain a green pigment called chlorophyll, which absorbs red and blue light and reflects green light, which is why most leaves look green. During photosynthesis, the plant takes in carbon dioxide from the air through small openings in its leaves and draws water up from the soil through its roots. Using the energy captured from light, it combines these simple ingredients to make glucose, a type of sugar. Oxygen is released into the air as a by-product. The plant uses the glucose for energy and to build other materials such as starch and cellulose, which forms its cell walls. Photosynthesis is important for almost all life on Earth. It provides the oxygen that animals breathe, and it is the starting point of most food chains, because animals eat plants or eat other animals that feed on plants.""",
    ),
    (
        "baking bread",
        """Bread is one of the oldest prepared foods, and a basic loaf needs only four ingredients: flour, water, salt and yeast. Yeast is a tiny living fungus. When it is mixed into dough, it feeds on sugars in the flour and gives off carbon dioxide gas. Kneading the dough stretches and strengthens gluten, a network of proteins found in wheat flour. The gluten traps the bubbles of gas, so the dough slowly rises and becomes light. Bakers usually let the dough rise once, shape it into a loaf, and then let it rise a second time before baking. In a hot oven, the gas bubbles expand, the yeast dies, and the outside of the loaf dries and browns to form a crust. The browning comes from chemical reactions between sugars and proteins that also produce much of the flavor of fresh bread. Some breads, such as sourdough, are raised with a starter, a mixture of flour and water that contains wild yeast and bacteria. Flatbreads, such as many kinds eaten across Asia and the Middle East, may use little or no yeast at all.""",
    ),
    (
        "railways",
        """Railways carry passengers and goods on vehicles that run along fixed steel rails. Because a smooth steel wheel rolling on a steel rail meets very little friction, a single locomotive can pull a long and heavy train using relatively little energy. The first public railways to use steam locomotives opened in Britain in the early nineteenth century. The Stockton and Darlington Railway began operating in 1825, and the Liverpool and Manchester Railway, opened in 1830, was the first to run regular passenger services hauled entirely by steam. Railways spread rapidly across Europe and North America, making travel faster and cheaper and helping industries move coal, iron and farm produce. Over the twentieth century, many countries replaced steam engines with diesel and electric locomotives, which are cleaner and need less maintenance. Today, high-speed trains in countries such as Japan, France, Spain and China regularly travel at more than 250 kilometers per hour on specially built lines. City rail systems, including underground metros and trams, carry millions of commuters every day.""",
    ),
    (
        "the orchestra",
        """A symphony orchestra is a large group of musicians who play together, usually led by a conductor. The instruments are arranged in four main families. The string section, which is the largest, includes violins, violas, cellos and double basses; their sound is made by drawing a bow across the strings or by plucking them. The woodwind section includes flutes, oboes, clarinets and bassoons. The brass section includes trumpets, French horns, trombones and the tuba, whose players make sound by buzzing their lips into a metal mouthpiece. The percussion section includes timpani, drums, cymbals and many other instruments that are struck or shaken. The conductor stands in front of the orchestra and uses hand movements, often with a thin stick called a baton, to set the tempo, shape the music and bring in different sections at the right moment. Before a concert begins, the oboe usually plays a note called A, and the other players tune their instruments to match it. Composers such as Mozart, Beethoven and Tchaikovsky wrote many famous works for orchestra.""",
    ),
    (
        "volcanoes",
        """A volcano is an opening in the Earth's crust through which molten rock, gases and ash escape from below the surface. Molten rock underground is called magma; once it reaches the surface it is called lava. Most volcanoes are found along the edges of tectonic plates, the huge slabs of rock that make up the Earth's outer shell. Many lie around the Pacific Ocean in a long chain often called the Ring of Fire. Other volcanoes, such as those that formed the Hawaiian Islands, sit above hot spots where unusually hot material rises from deep within the Earth. The shape of a volcano depends on the kind of lava it produces. Runny lava spreads out to form broad, gently sloping shield volcanoes, while thick, sticky lava and layers of ash build steep cone-shaped mountains. Eruptions can be dangerous, but volcanic activity also creates new land, and volcanic soils are often very fertile. Scientists called volcanologists watch for small earthquakes, ground swelling and changes in gases to warn people when an eruption may be coming.""",
    ),
    (
        "honeybees",
        """Honeybees are social insects that live together in large groups called colonies. A healthy colony in summer may contain tens of thousands of bees, but only one of them is normally the queen, whose main job is to lay eggs. Most of the other bees are female workers. Young workers clean the hive, feed the larvae and build honeycomb from wax made in their own bodies. Older workers fly out to gather nectar and pollen from flowers. Male bees, called drones, do not collect food; their role is to mate with queens from other colonies. Back at the hive, workers turn nectar into honey by adding enzymes and fanning it with their wings until much of the water evaporates. The honey is stored in wax cells and sealed, providing food for the colony during winter. A worker that finds a good patch of flowers can tell her sisters where it is by performing a waggle dance on the comb. As bees move from flower to flower, they carry pollen with them, which helps many fruit and vegetable crops to produce seeds.""",
    ),
    (
        "the Moon",
        """The Moon is Earth's only natural satellite. It is about a quarter of the Earth's width and orbits our planet at an average distance of roughly 384,000 kilometers. The Moon does not produce its own light; it shines because it reflects sunlight. As it travels around the Earth about once a month, we see different amounts of its sunlit side, which gives rise to the phases of the Moon, from new moon to full moon and back again. The same side of the Moon always faces the Earth, because the Moon turns on its axis once in the same time that it takes to complete one orbit. The Moon's gravity pulls on the Earth's oceans and is the main cause of the tides. Its surface is covered with craters made by impacts, along with wide, dark plains of ancient lava that early astronomers mistook for seas. The Moon has almost no atmosphere, so there is no weather and footprints can last for a very long time. Between 1969 and 1972, twelve astronauts walked on its surface during the Apollo missions.""",
    ),
    (
        "public libraries",
        """A public library is a collection of books and other materials that is open for anyone in a community to use, usually without charge. Libraries lend books for people to read at home, and many also lend audiobooks, films, music and even tools or musical instruments. Inside, readers can find reference works, newspapers and magazines, as well as quiet places to study. Librarians help visitors find information, recommend books and teach people how to search catalogs and online databases. To keep things easy to find, many libraries arrange non-fiction books by subject using a classification system, such as the Dewey Decimal System, which gives every subject a number. Fiction is often shelved alphabetically by the author's surname. Modern libraries also provide free computers and internet access, which can be important for people who do not have them at home. Many run activities such as story times for young children, reading groups, homework clubs and classes for adults. In this way, a library serves not only as a store of knowledge but also as a meeting place for the whole community.""",
    ),
    (
        "tea",
        """Tea is a drink made by pouring hot water over the dried leaves of the tea plant, Camellia sinensis. It is one of the most widely consumed drinks in the world, second only to water. The tea plant is thought to have first been used in southwestern China, and tea drinking spread from there to Japan, Korea and much of Asia before reaching Europe in the seventeenth century. Today, large tea gardens are found in countries such as China, India, Sri Lanka and Kenya. The main types of tea all come from the same plant but are processed differently. For green tea, the leaves are heated soon after picking to stop them from changing, so they keep a fresh, grassy taste. For black tea, the leaves are rolled and left exposed to the air, which darkens them and gives a stronger, richer flavor. Oolong tea is partly oxidized and falls between the two. Tea naturally contains caffeine, though usually less than a similar cup of coffee. Herbal drinks made from mint, chamomile or other plants are often called teas, but they do not contain tea leaves.""",
    ),
    (
        "bicycles",
        """A bicycle is a vehicle with two wheels, one behind the other, that is moved by the rider pushing on pedals. The pedals turn a toothed wheel called a chainring, and a chain carries this motion to a smaller toothed wheel, called a sprocket, on the back wheel. Many bicycles have several sprockets and chainrings, so the rider can change gear. A low gear makes it easier to climb hills, while a high gear allows greater speed on flat ground. Early bicycles of the nineteenth century included the penny-farthing, which had a very large front wheel and a tiny rear one. The safety bicycle, with two wheels of similar size and a chain drive, became popular in the 1880s and looks much like the bicycles we ride today. Air-filled rubber tires, introduced soon afterward, made cycling far more comfortable. Bicycles are efficient machines: a cyclist can travel several times farther than a walker using the same amount of energy. They produce no exhaust fumes, take up little space and provide good exercise, which is why many cities build special lanes for them.""",
    ),
    (
        "the human heart",
        """The human heart is a muscular organ about the size of a closed fist, located in the chest between the lungs. Its job is to pump blood around the body, carrying oxygen and nutrients to the cells and taking away waste such as carbon dioxide. The heart has four chambers. The two upper chambers, called atria, receive blood, and the two lower chambers, called ventricles, pump it out. The right side of the heart sends blood to the lungs, where it picks up oxygen and releases carbon dioxide. The oxygen-rich blood then returns to the left side of the heart, which pumps it through the arteries to the rest of the body. Veins bring the used blood back to the heart, and the cycle begins again. Valves inside the heart act like one-way doors, keeping the blood flowing in the right direction; their closing makes the familiar lub-dub sound of a heartbeat. An adult's heart at rest usually beats between sixty and one hundred times a minute. Regular exercise, a balanced diet and not smoking all help to keep the heart healthy.""",
    ),
    (
        "tides",
        """Tides are the regular rise and fall of the sea along coastlines. They are caused mainly by the gravitational pull of the Moon, with a smaller contribution from the Sun. The Moon's gravity pulls slightly harder on the side of the Earth that faces it, drawing the ocean into a bulge. A second bulge forms on the opposite side of the planet. As the Earth rotates, most coastal places pass through both bulges each day, so they usually experience two high tides and two low tides roughly every twenty-four hours and fifty minutes. When the Sun, Moon and Earth are lined up, at new moon and full moon, their pulls combine to produce especially large tides called spring tides. When the Sun and Moon are at right angles to each other, the tides are smaller; these are called neap tides. The shape of the coast and the sea floor has a strong effect on how high tides rise. Some bays and estuaries have a tidal range of many meters, while parts of the Mediterranean Sea have very small tides.""",
    ),
    (
        "rainbows",
        """A rainbow is an arc of colored light that appears in the sky when sunlight shines on falling raindrops. To see one, you usually need to have the Sun behind you and rain in front of you. When a ray of sunlight enters a raindrop, it slows down and bends, an effect called refraction. The light then reflects off the back of the drop and bends again as it leaves. White sunlight is really a mixture of many colors, and each color bends by a slightly different amount, so the light is spread out into a band called a spectrum. The colors of a rainbow always appear in the same order: red on the outside, followed by orange, yellow, green, blue, indigo and violet on the inside. Sometimes a fainter second rainbow can be seen outside the first. In this secondary bow, the light has reflected twice inside each drop, and the order of the colors is reversed. Rainbows can also form in the spray from waterfalls, fountains and garden hoses whenever sunlight and water droplets meet at the right angle.""",
    ),
    (
        "the seasons",
        """The Earth has seasons because its axis of rotation is tilted by about 23.5 degrees compared with the plane of its orbit around the Sun. As the Earth travels around the Sun during the year, this tilt stays pointing in the same direction in space. For part of the year the Northern Hemisphere leans toward the Sun. Sunlight there strikes the ground more directly and the days are longer, so it is summer. At the same time the Southern Hemisphere leans away from the Sun and has winter. Six months later the situation is reversed. It is a common mistake to think that summer happens because the Earth is closer to the Sun. In fact, the Earth is closest to the Sun in early January, during the northern winter. Near the equator, the amount of sunlight changes little through the year, so temperatures stay warm and many places have wet and dry seasons instead of summer and winter. Near the poles, the differences are extreme: in midsummer the Sun may not set at all, and in midwinter it may not rise for weeks.""",
    ),
    (
        "coral reefs",
        """Coral reefs are underwater structures built by colonies of tiny animals called coral polyps. Each polyp is soft-bodied and related to jellyfish, but it builds a hard skeleton of calcium carbonate, the same material found in limestone and seashells. Over thousands of years, layer upon layer of these skeletons can form huge reefs. Most reef-building corals live in warm, clear, shallow tropical seas, because they depend on tiny algae that live inside their tissues. The algae use sunlight to make food by photosynthesis and share it with the coral, while the coral gives the algae shelter. This partnership also gives many corals their bright colors. Reefs cover only a very small part of the ocean floor, yet they are home to a large share of all marine species, including fish, crabs, sea turtles and sponges. They also protect coastlines by breaking up waves. When the water becomes too warm, corals can expel their algae and turn white, a process called bleaching. If the heat lasts too long, the corals may die. The Great Barrier Reef, off the coast of Australia, is the largest coral reef system in the world.""",
    ),
    (
        "the printing press",
        """Before printing, books in Europe were copied by hand, which made them slow to produce and expensive to buy. In the middle of the fifteenth century, Johannes Gutenberg, working in the German city of Mainz, developed a printing system using movable metal type. Each letter was cast as a separate small block, and the blocks could be arranged into lines and pages, inked and pressed onto paper, then reused for a new page. Gutenberg also developed an oil-based ink that stuck well to metal type and adapted a screw press, similar to those used for making wine, to press the pages evenly. His most famous work, a Bible printed in the 1450s, is admired for its quality. Printing with movable type had been used earlier in East Asia, but Gutenberg's method spread quickly across Europe. Within a few decades, printing presses were working in many European cities, and millions of books had been produced. Books became cheaper and more common, more people learned to read, and new ideas in science, religion and politics could be shared far more widely than before.""",
    ),
    (
        "recycling",
        """Recycling is the process of collecting used materials and turning them into new products instead of throwing them away. Common materials that can be recycled include paper, cardboard, glass, aluminum and steel cans, and many kinds of plastic. After collection, the materials are taken to a sorting facility, where they are separated by type using a mix of machines and human workers. Magnets pull out steel cans, while screens, air jets and optical scanners help separate paper and different plastics. Glass can be crushed, melted and formed into new bottles again and again without losing quality. Aluminum is especially valuable to recycle, because making a can from recycled metal uses only a small fraction of the energy needed to make one from raw ore. Paper fibers can be reused several times, but they become shorter each time, so new fibers must eventually be added. Recycling saves natural resources, reduces the amount of waste sent to landfill and can cut energy use. However, it works best when items are clean and sorted correctly, and reducing and reusing things are usually even better for the environment.""",
    ),
    (
        "chess",
        """Chess is a strategy game for two players, played on a square board divided into sixty-four squares of alternating light and dark colors. Each player begins with sixteen pieces: one king, one queen, two rooks, two bishops, two knights and eight pawns. One player controls the white pieces and the other the black pieces, and White always moves first. Each type of piece moves in its own way. Rooks move in straight lines along ranks and files, bishops move diagonally, and the queen can move in either way, making her the most powerful piece. The knight moves in an L shape and is the only piece that can jump over others. Pawns move forward one square at a time, with the option of two squares on their first move, and capture diagonally. The aim of the game is to checkmate the opponent's king, which means attacking it in such a way that it cannot escape. A game can also end in a draw, for example when neither side has enough pieces left to force checkmate. Modern chess developed in Europe about five hundred years ago from older games played in India and Persia.""",
    ),
    (
        "maps",
        """A map is a drawing that shows the features of an area, usually as seen from above. Maps can show many kinds of information, including roads, rivers, borders, cities, the height of the land and even population or weather. Every good map has a scale, which tells the reader how distances on the map compare with real distances on the ground. For example, on a map with a scale of one to fifty thousand, one centimeter on the map stands for fifty thousand centimeters, or half a kilometer, in real life. Maps also use symbols, explained in a key or legend, to stand for things such as churches, campsites or railway stations. A compass rose or north arrow shows direction. Because the Earth is round, it cannot be shown on a flat map without some stretching. Mapmakers use different projections, each of which distorts shape, area or distance in some way. On many common world maps, countries near the poles, such as Greenland, look much larger than they really are. Today, many maps are made using satellite images and are read on phones and computers.""",
    ),
    (
        "time zones",
        """Because the Earth turns from west to east, the Sun rises at different times in different places. Before the nineteenth century, most towns kept their own local time, set so that the Sun was highest in the sky at noon. This caused confusion once railways made fast travel possible, since each station along a line might have a slightly different time. To solve the problem, countries agreed to divide the world into time zones. The Earth turns through 360 degrees in about twenty-four hours, or 15 degrees each hour, so each standard time zone is, in principle, about 15 degrees of longitude wide. In practice, zone boundaries often follow national or regional borders. Time zones are measured from the prime meridian, which passes through Greenwich in London. Places to the east are ahead of Greenwich time, and places to the west are behind. Some large countries, such as the United States, Russia and Australia, use several time zones, while China uses a single time zone across the whole country. Many places also move their clocks forward by an hour in summer to make better use of daylight.""",
    ),
    (
        "earthquakes",
        """An earthquake is a sudden shaking of the ground caused by the movement of rock beneath the Earth's surface. The Earth's outer shell is broken into large pieces called tectonic plates, which move very slowly, often only a few centimeters a year. Where plates meet, the rocks can lock together while stress builds up over many years. When the rocks finally slip along a crack called a fault, the stored energy is released as waves that travel through the ground. The point underground where the slip begins is called the focus, and the place on the surface directly above it is called the epicenter. Scientists record earthquakes with instruments called seismometers and describe their size using magnitude scales. Each step up on the magnitude scale represents a much larger release of energy. Most earthquakes are too small for people to feel, but large ones can damage buildings, bridges and roads. Earthquakes under the sea can also push up huge amounts of water and cause tsunamis. In areas at risk, engineers design buildings that can bend without collapsing, and people practice drills so that they know how to stay safe.""",
    ),
    (
        "forests",
        """Forests are large areas of land covered mainly by trees. They cover about a third of the Earth's land surface and are found in many climates. Tropical rainforests grow near the equator, where it is warm and wet all year. They have the greatest variety of plant and animal life of any land habitat. Temperate forests, found in regions with warm summers and cool winters, often contain broadleaf trees such as oak, beech and maple, which lose their leaves in autumn. Farther north, the vast boreal forests of Canada, Scandinavia and Russia are dominated by conifers such as spruce, pine and fir, which keep their needle-like leaves through the long, cold winters. Forests are important for many reasons. Trees take in carbon dioxide and store carbon in their wood, and they release oxygen. Their roots hold soil in place and help control the flow of water, reducing floods and erosion. Forests provide timber, fruit, nuts and medicines, as well as homes for countless animals. When forests are cleared for farming or building, these benefits can be lost, which is why many countries work to protect and replant them.""",
    ),
    (
        "the Olympic Games",
        """The Olympic Games are an international sporting event in which athletes from around the world compete in many different sports. The idea comes from ancient Greece, where games were held at Olympia in honor of the god Zeus. According to tradition, the ancient games began in 776 BC and were held every four years for more than a thousand years. Events included running races, wrestling, boxing, chariot racing and the pentathlon. The modern Olympic Games were started by a French educator, Pierre de Coubertin, and the first were held in Athens in 1896. Today, the Summer Games and the Winter Games each take place every four years, staggered so that there is an Olympic event every two years. The Olympic symbol is five interlocking rings in blue, yellow, black, green and red on a white background, representing the union of the continents. Before each Games, a flame is lit at Olympia using the rays of the Sun and carried by a relay of torchbearers to the host city. Winners receive gold medals, while those finishing second and third receive silver and bronze.""",
    ),
    (
        "London",
        """London, the capital of the United Kingdom, stands on the River Thames in the south-east of England. The city was founded by the Romans, who built a settlement called Londinium soon after their invasion of Britain in AD 43. They constructed a bridge across the Thames and, later, a defensive wall, parts of which can still be seen today. After the Romans left, the town declined, but it grew again in the Middle Ages to become England's largest city and an important centre of trade. In 1666, the Great Fire of London destroyed much of the old city, including the medieval St Paul's Cathedral. The architect Christopher Wren designed the new St Paul's and many other churches during the rebuilding. In the eighteenth and nineteenth centuries, London became one of the largest cities in the world and the heart of a vast trading network. The world's first underground railway opened there in 1863. During the Second World War, the city was heavily bombed in the Blitz. Today, London is a major centre of finance, government and culture, known for landmarks such as the Tower of London and the Houses of Parliament.""",
    ),
    (
        "electricity at home",
        """Electricity is a form of energy carried by the flow of tiny charged particles called electrons. Most homes receive electricity from power stations through a network of cables called the grid. At a power station, a generator spins a coil of wire inside a magnetic field, which causes an electric current to flow. The generator may be turned by steam from burning fuel or nuclear reactions, by falling water, or by the wind. Solar panels work differently, turning sunlight directly into electricity. Before electricity reaches homes, transformers reduce its voltage to a safer level. Inside a house, wires run through the walls to sockets, switches and lights. A switch works by opening or closing a gap in a circuit: when the circuit is closed, current can flow and the light comes on. Fuses and circuit breakers protect the wiring by cutting off the current if too much flows, which could otherwise cause overheating and fire. Materials such as copper let electricity flow easily and are called conductors, while plastic and rubber, which block it, are used as insulators to cover wires.""",
    ),
    (
        "sleep",
        """Sleep is a natural state of rest that humans and most other animals need in order to stay healthy. During sleep, the body and brain are far from idle. The brain moves through repeating cycles of lighter and deeper sleep, each lasting roughly ninety minutes. One stage, called rapid eye movement or REM sleep, is when most vivid dreaming takes place, and the eyes dart about beneath closed eyelids. Deep sleep is important for physical recovery, while sleep in general helps the brain to sort and store memories from the day. The amount of sleep people need changes with age. Newborn babies sleep for most of the day, school-age children usually need around nine to eleven hours, and most adults need about seven to nine hours each night. The timing of sleep is guided by an internal body clock that responds to light and darkness. Not getting enough sleep can make it harder to concentrate, affect mood and weaken the body's defenses against illness. Keeping a regular bedtime, avoiding bright screens late at night and keeping the bedroom dark and quiet can all help people sleep better.""",
    ),
    (
        "rice",
        """Rice is the seed of a grass and one of the most important food crops in the world, feeding billions of people every day. It is especially central to diets in East, South and Southeast Asia, and it is also widely grown in Africa and the Americas. Rice was first domesticated in Asia thousands of years ago. Much of the world's rice is grown in flooded fields called paddies. Young rice plants tolerate standing water well, while many weeds do not, so flooding helps to control weeds. Farmers in hilly areas often build terraces, step-like fields cut into slopes, so that water can be held on each level. After several months, the plants turn golden, the water is drained, and the grain is harvested, either by hand or by machine. The harvested grains are dried and then milled to remove the tough outer husk. Brown rice keeps its bran layer, while white rice has the bran polished away, giving it a softer texture but fewer nutrients. There are thousands of varieties, from long-grain rice that cooks into separate fluffy grains to short-grain rice that becomes sticky.""",
    ),
    (
        "clocks",
        """People have measured time for thousands of years. Early methods relied on nature: sundials tracked the moving shadow cast by the Sun, while water clocks measured time by the steady flow of water from one container to another. Hourglasses, which let sand trickle through a narrow neck, were useful at sea and in places where sunlight was not available. Mechanical clocks appeared in Europe in the late Middle Ages. Many were large tower clocks driven by falling weights, and some had no hands at all, striking a bell to mark the hours instead. In the seventeenth century, the Dutch scientist Christiaan Huygens built the first pendulum clock, based on the discovery that a pendulum of a given length swings with a very regular rhythm. This made clocks far more accurate. Later, clocks and watches powered by coiled springs became small enough to carry. In the twentieth century, quartz clocks used the vibrations of a tiny crystal to keep time, and atomic clocks, which measure the vibrations of atoms, became so precise that they would lose less than a second over millions of years.""",
    ),
]


def build_mcq():
    rng = random.Random(SEED)
    subjects = [
        ("science", [(q, c, d) for q, c, d in SCIENCE]),
        ("history", [(q, c, d) for q, c, d in HISTORY]),
        ("geography", [(q, c, d) for q, c, d in GEOGRAPHY]),
        ("arithmetic", [(q, c, d) for q, _e, c, d in ARITHMETIC]),
        ("language", [(q, c, d) for q, c, d in LANGUAGE]),
    ]
    for q, expr, c, _d in ARITHMETIC:
        if expr is not None:
            val = eval(expr, {"__builtins__": {}})
            assert str(val) == c.split()[0], (q, expr, val, c)
    rows = []
    for subject, items in subjects:
        positions = [i % 4 for i in range(len(items))]
        rng.shuffle(positions)
        for (q, correct, distractors), pos in zip(items, positions):
            assert len(distractors) == 3 and correct not in distractors, q
            assert len(set(distractors)) == 3, q
            ds = list(distractors)
            rng.shuffle(ds)
            choices = ds[:pos] + [correct] + ds[pos:]
            rows.append({"question": q, "choices": choices, "answer": pos, "subject": subject})
    return rows


def main():
    mcq = build_mcq()
    with open(HERE / "mcq.jsonl", "w", encoding="utf-8") as f:
        for r in mcq:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(HERE / "prose.jsonl", "w", encoding="utf-8") as f:
        for topic, text in PROSE:
            f.write(json.dumps({"text": " ".join(text.split()), "topic": topic}, ensure_ascii=False) + "\n")
    print(f"wrote {len(mcq)} questions and {len(PROSE)} passages")


if __name__ == "__main__":
    main()
